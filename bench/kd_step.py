#!/usr/bin/env python3
"""The KD training step of distill-tui, written in PyTorch + transformers, for timing.

One step = teacher forward (no grad) + student forward + loss + backward + grad clipping + AdamW,
on a batch of `--batch` windows of `--seq-len` tokens, exactly like one `distill-tui run` step with
`cache_top_k = 0` (the teacher's full logits recomputed every step):

  loss = alpha * T^2 * KL(p_teacher(T) || p_student(T)) + (1 - alpha) * CE(student, labels)

averaged over predicted positions, T dividing both models' logits before the softmax (the
conventions of src/engine/distill/losses.rs). As in distill-tui, a window of L tokens feeds its
first L-1 tokens and predicts tokens 1..L-1; throughput counts batch*L tokens per step (the same
count distill-tui's `tokens_per_second` uses).

  python3 bench/kd_step.py --teacher offline/SmolLM2-135M-Instruct-dequantized --student DIR \
      --data 'assets/corpus/train/*.txt' --dtype bf16 --warmup 3 --steps 8

Prints one JSON object on stdout (diagnostics on stderr). `--dtype bf16` runs the teacher and the
student (forward and backward) under torch.autocast("cpu", dtype=torch.bfloat16), the loss in f32,
master weights and AdamW in f32. `--device cuda` (or `cuda:N`) runs the same step on an NVIDIA GPU
(autocast on "cuda"; each step's time ends when the GPU has finished it); the CPU is the default.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def resolve_tokenizer(model_dir_or_id):
    """tokenizer.json beside the model (the offline SmolLM2 folder has no tokenizer_config.json)."""
    if os.path.isdir(model_dir_or_id):
        return os.path.join(model_dir_or_id, "tokenizer.json")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(model_dir_or_id, "tokenizer.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="hub id or HF folder")
    ap.add_argument("--student", required=True, help="HF folder (distill-tui derive-student --out DIR)")
    ap.add_argument("--data", required=True, help="text file or glob (joined by a blank line, as distill-tui does)")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (the default), cuda or cuda:N")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"

    # Data: the same text distill-tui reads, tokenized with the teacher's tokenizer, no specials.
    files = sorted(glob.glob(args.data))
    if not files:
        sys.exit(f"--data {args.data!r} matches no file")
    text = "\n\n".join(open(f, encoding="utf-8").read() for f in files)
    tok = Tokenizer.from_file(resolve_tokenizer(args.teacher))
    ids = torch.tensor(tok.encode(text, add_special_tokens=False).ids, dtype=torch.long)
    n_windows = ids.numel() // args.seq_len
    windows = ids[: n_windows * args.seq_len].view(n_windows, args.seq_len)
    log(f"data: {ids.numel()} tokens, {n_windows} windows of {args.seq_len}")

    t0 = time.perf_counter()
    teacher = LlamaForCausalLM.from_pretrained(args.teacher, attn_implementation="sdpa", dtype=torch.float32)
    student = LlamaForCausalLM.from_pretrained(args.student, attn_implementation="sdpa", dtype=torch.float32)
    if cuda:
        teacher.to(dev)
        student.to(dev)
    teacher.eval()
    student.train()
    for p in teacher.parameters():
        p.requires_grad_(False)
    log(f"loaded in {time.perf_counter() - t0:.1f}s: teacher {sum(p.numel() for p in teacher.parameters())} "
        f"params, student {sum(p.numel() for p in student.parameters())} params "
        f"(attention: {teacher.config._attn_implementation})")

    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    T, alpha = args.temperature, args.alpha
    autocast = args.dtype == "bf16"
    gen = torch.Generator().manual_seed(args.seed)

    def step():
        batch = windows[torch.randint(0, n_windows, (args.batch,), generator=gen)]
        if cuda:
            batch = batch.to(dev)
        inputs, labels = batch[:, :-1], batch[:, 1:]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                t_logits = teacher(input_ids=inputs).logits
            s_logits = student(input_ids=inputs).logits
        v = s_logits.shape[-1]
        s = s_logits.float().reshape(-1, v)
        t = t_logits.float().reshape(-1, v)
        # KL(p_t || p_s) at T, T^2-scaled, mean over positions (Hinton); CE at T = 1.
        kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True)
        ce = F.cross_entropy(s, labels.reshape(-1))
        loss = alpha * T * T * kl + (1 - alpha) * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), args.grad_clip)
        opt.step()
        if cuda:
            torch.cuda.synchronize(dev)
        return loss.item(), kl.item(), ce.item()

    tokens = args.batch * args.seq_len
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        c = time.perf_counter()
        loss, kl, ce = step()
        dt = time.perf_counter() - c
        timed = i >= args.warmup
        if timed:
            times.append(dt)
        losses.append(loss)
        log(f"step {i + 1}{'' if timed else ' (warmup)'}: {dt:.2f}s {tokens / dt:.1f} tokens/s "
            f"loss {loss:.4f} (kl {kl:.4f} ce {ce:.4f})")
    med = statistics.median(times)
    print(json.dumps({
        "engine": "pytorch",
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "dtype": args.dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "temperature": T,
        "alpha": alpha,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "step_seconds": times,
        "median_step_seconds": med,
        "tokens_per_second": tokens / med,
        "losses": losses,
    }))


if __name__ == "__main__":
    main()

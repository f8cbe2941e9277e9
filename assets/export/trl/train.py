#!/usr/bin/env python3
"""Knowledge distillation with Hugging Face transformers, as distill-tui ran it.

Written by `distill-tui export --target trl`; the settings are in kd_config.json, the training
windows (tokenised by distill-tui with the run's tokenizer) in data/, the student's initial weights
in student_init/. See README.md for the conventions and for multi-GPU launches.

    python train.py                                   # one process (CPU or one GPU)
    accelerate launch --config_file accelerate_fsdp.yaml train.py
    accelerate launch --config_file accelerate_deepspeed.yaml train.py
"""
import argparse
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, SequentialSampler
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

HERE = os.path.dirname(os.path.abspath(__file__))


def read_u32(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    # Token ids and window indices are below 2^31: read as int32 (little-endian), widen to int64.
    return torch.frombuffer(data, dtype=torch.int32).to(torch.int64)


class Windows(Dataset):
    """Sample i is the window distill-tui used for sample i (step i // (batch_size * grad_accum))."""

    def __init__(self, tokens, order, seq_len):
        self.tokens, self.order, self.seq_len = tokens, order, seq_len

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        w = int(self.order[i])
        return {"input_ids": self.tokens[w * self.seq_len : (w + 1) * self.seq_len]}


def lr_at(step, c):
    """distill-tui's schedule: linear warmup to lr, then cosine decay to lr * min_lr_ratio."""
    if step < c["warmup_steps"]:
        return c["lr"] * (step + 1) / c["warmup_steps"]
    span = max(c["steps"] - c["warmup_steps"], 1)
    progress = min((step - c["warmup_steps"]) / span, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return c["lr"] * (c["min_lr_ratio"] + (1.0 - c["min_lr_ratio"]) * cosine)


def soft_loss_sum(s, t, kind, temperature, beta):
    """The soft loss summed over positions; s, t: [n, vocab] logits. Divergences are T²-scaled."""
    if kind == "mse_logits":
        return (s - t).pow(2).mean(-1).sum()
    log_s = F.log_softmax(s / temperature, dim=-1)
    log_t = F.log_softmax(t / temperature, dim=-1)
    if kind == "forward_kl":  # KL(teacher || student), Hinton
        per = (log_t.exp() * (log_t - log_s)).sum(-1)
    elif kind == "reverse_kl":  # KL(student || teacher), MiniLLM
        per = (log_s.exp() * (log_s - log_t)).sum(-1)
    elif kind == "jsd":  # beta * KL(t || m) + (1 - beta) * KL(s || m), m = beta * p_t + (1 - beta) * p_s
        p_t, p_s = log_t.exp(), log_s.exp()
        log_m = (beta * p_t + (1 - beta) * p_s).clamp(torch.finfo(torch.float32).tiny, 1.0).log()
        per = beta * (p_t * (log_t - log_m)).sum(-1) + (1 - beta) * (p_s * (log_s - log_m)).sum(-1)
    else:
        raise ValueError(f"unknown loss {kind}")
    return per.sum() * temperature * temperature


def unwrapped_name(name):
    for prefix in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "module."):
        name = name.replace(prefix, "")
    return name


class KDTrainer(Trainer):
    """alpha * soft(teacher, student; T) + (1 - alpha) * cross-entropy(labels; T = 1), per position."""

    def __init__(self, teacher, kd, **kwargs):
        super().__init__(**kwargs)
        self.teacher, self.kd = teacher, kd
        self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by grad_accum
        # AdamW decays matrices and embeddings, never norms and biases (1-D tensors), as distill-tui.
        self.decay_names = {n for n, p in self.model.named_parameters() if p.ndim >= 2}

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)  # distill-tui's batch order is in the data

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            m = self.model if model is None else model
            named = [(unwrapped_name(n), p) for n, p in m.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in named if n in self.decay_names], "weight_decay": self.kd["weight_decay"]},
                {"params": [p for n, p in named if n not in self.decay_names], "weight_decay": 0.0},
            ]
            a = self.kd["adam"]
            self.optimizer = torch.optim.AdamW(groups, lr=self.kd["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"])
        return self.optimizer

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            kd = self.kd
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: lr_at(step, kd) / kd["lr"]
            )
        return self.lr_scheduler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kd = self.kd
        ids = inputs["input_ids"]
        x, labels = ids[:, :-1], ids[:, 1:].reshape(-1)
        out = model(input_ids=x)
        s = out.logits.float().reshape(labels.numel(), -1)
        n = labels.numel()
        hard = F.cross_entropy(s, labels, reduction="sum")
        soft = torch.zeros((), device=s.device)
        if kd["alpha"] > 0:
            with torch.no_grad():
                t = self.teacher(input_ids=x).logits.float().reshape(n, -1)
            soft = soft_loss_sum(s, t, kd["loss"], kd["temperature"], kd["jsd_beta"])
        loss = (kd["alpha"] * soft + (1 - kd["alpha"]) * hard) / n
        if self.is_world_process_zero():
            line = {"kd_step": self.state.global_step, "loss": loss.item(), "soft": soft.item() / n, "hard": hard.item() / n}
            print(json.dumps(line), flush=True)
        return (loss, out) if return_outputs else loss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=os.path.join(HERE, "kd_config.json"))
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (the schedule keeps the recipe's steps)")
    ap.add_argument("--output-dir", default=os.path.join(HERE, "output"))
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    args = ap.parse_args()
    with open(args.config) as f:
        kd = json.load(f)
    rel = lambda p: p if os.path.isabs(p) else os.path.join(os.path.dirname(os.path.abspath(args.config)), p)
    torch.manual_seed(kd["seed"])
    t = kd["teacher"]
    teacher_src = rel(t["path"]) if t.get("path") else t["hub_id"]
    teacher = AutoModelForCausalLM.from_pretrained(teacher_src, revision=t.get("revision"), dtype=torch.float32)
    teacher.eval().requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(rel(kd["student_init"]), dtype=torch.float32)
    data = Windows(read_u32(rel(kd["tokens"])), read_u32(rel(kd["order"])), kd["seq_len"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if kd["batch_size"] % world != 0:
        sys.exit(f"batch_size {kd['batch_size']} is not divisible by the {world} processes")
    targs = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=kd["batch_size"] // world,
        gradient_accumulation_steps=kd["grad_accum"],
        max_steps=args.max_steps or kd["steps"],
        learning_rate=kd["lr"],
        weight_decay=kd["weight_decay"],
        max_grad_norm=kd["grad_clip"],
        seed=kd["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=args.cpu,
        dataloader_drop_last=True,
    )
    trainer = KDTrainer(teacher=teacher, kd=kd, model=student, args=targs, train_dataset=data)
    if trainer.accelerator.device.type != "cpu":
        teacher.to(trainer.accelerator.device)
    trainer.train()
    out = os.path.join(args.output_dir, "student")
    trainer.save_model(out)
    if trainer.is_world_process_zero():
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            src = os.path.join(rel(kd["student_init"]), name)
            if os.path.isfile(src):
                shutil.copyfile(src, os.path.join(out, name))


if __name__ == "__main__":
    main()

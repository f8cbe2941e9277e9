#!/usr/bin/env python3
"""Perplexity of a causal LM with PyTorch + transformers, scored exactly as distill-tui scores it.

distill-tui (a run's evaluation, `eval --protocol all`): the text tokenized with the model's
tokenizer.json and no special tokens, cut to the first `--tokens` ids, split into consecutive windows
of `--seq-len` (the last one shorter); each window feeds its first L-1 tokens and predicts tokens
1..L-1; perplexity = exp(mean NLL over every predicted token), top-1 accuracy over the same.
The golden reference of bench/gpu_check.sh for distill-tui's forward pass on the GPU.

  python3 bench/hf_eval.py --model assets/models/demo-teacher --data assets/corpus/eval.txt \
      --seq-len 128 --tokens 4096 --device cuda

Prints one JSON object on stdout.
"""

import argparse
import json
import math
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF folder (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--data", required=True, help="text file")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()

    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    dev = torch.device(args.device)
    # f32 everywhere, no TF32 shortcuts: the reference is the exact f32 computation.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    text = open(args.data, encoding="utf-8").read()
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    ids = tok.encode(text, add_special_tokens=False).ids[: args.tokens]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.to(dev).eval()
    nll, correct, predicted = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(ids), args.seq_len):
            w = ids[start : start + args.seq_len]
            if len(w) < 2:
                continue
            x = torch.tensor([w], dtype=torch.long, device=dev)
            logits = model(input_ids=x[:, :-1]).logits.float()[0]
            labels = x[0, 1:]
            logp = torch.log_softmax(logits, -1)
            nll -= logp.gather(1, labels.unsqueeze(1)).double().sum().item()
            correct += int((logits.argmax(-1) == labels).sum().item())
            predicted += len(w) - 1
    mean = nll / predicted
    print(json.dumps({"engine": "transformers", "torch": torch.__version__, "device": str(dev), "model": args.model,
                      "tokens": len(ids), "seq_len": args.seq_len, "predicted_tokens": predicted,
                      "mean_nll": mean, "perplexity": math.exp(mean), "top1_accuracy": correct / predicted}))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""PyTorch's f32 matmul (MKL on x86) on the linear layers' shapes of the SmolLM2 KD workload, for
comparison with `cargo bench --bench gemm` (candle's f32 GEMM on the same shapes and products).

  python3 bench/torch_gemm.py [--threads 2] [--runs 7]

Prints GFLOP/s, median of RUNS after one untimed call, for x·Wᵀ (forward), g·W (input gradient)
and gᵀ·x (weight gradient). 1020 rows = 4 windows × 255 predicted positions; the output layer is
measured on a 341-row chunk, as distill-tui computes it.
"""

import argparse
import statistics
import time

import torch


def median_seconds(f, runs):
    f()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.runs} runs\n")
    print("| layer (rows × in → out) | x·Wᵀ | g·W | gᵀ·x |")
    print("| --- | ---: | ---: | ---: |")
    for name, k, n in [("q/o proj", 576, 576), ("k/v proj", 576, 192), ("gate/up", 576, 1536),
                       ("down", 1536, 576), ("lm_head (341-row chunk)", 576, 49152)]:
        m = 341 if n == 49152 else 1020
        x, w, g = torch.randn(m, k), torch.randn(n, k) * 0.02, torch.randn(m, n)
        flop = 2.0 * m * n * k
        cells = [f"{flop / median_seconds(lambda: a @ b, args.runs) / 1e9:.0f}"
                 for a, b in [(x, w.t()), (g, w), (g.t(), x)]]
        print(f"| {name} ({m} × {k} → {n}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""distill-tui vs PyTorch + transformers on one KD training workload, in one run.

  HF_HUB_OFFLINE=1 python3 bench/compare.py [--bin target/release/distill-tui] [--layers 8] \
      [--batch 4] [--seq-len 256] [--steps 8] [--rounds 1] [--out bench/results/NAME.json]

1. derives the student once: `distill-tui derive-student TEACHER --layers N --out WORK/student`
   (DistilBERT-style copy of teacher layers; 8 layers of SmolLM2-135M = 56.6M parameters);
2. PyTorch f32 and PyTorch bf16 autocast (bench/kd_step.py, 2 threads, SDPA attention);
3. `distill-tui run` on a generated recipe with the same teacher, student, data, batch, sequence
   length, T = 2, alpha = 0.9, baseline off, eval_every > steps, twice:
   - `cache_top_k = 0`: the teacher's full logits recomputed every step;
   - `cache_top_k = 64` with a fresh empty `DISTILL_CACHE_DIR` (cold cache: every step computes
     the teacher's top-k, which is also "teacher every step");
   each in f32 and with `precision = "bf16"` (the linear layers' matmuls take bf16 inputs with f32
   accumulation, forward and backward, teacher and student: what PyTorch's autocast does); and
   `cache_top_k = 0` with `teacher_precision = "int8"` (the frozen teacher's linear layers in
   int8, SmoothQuant-smoothed; the student trains in f32);
4. with `--rounds N`, repeats 2-3 N times, alternating the configurations;
5. prints a table: configuration, median step tokens/s (over all its rounds' timed steps), ratio
   vs the faster PyTorch configuration of this run (bf16 autocast or f32, whichever is faster on
   this CPU).

`--simd avx2` runs both sides on an x86-64 CPU's AVX2 code paths, to measure what an AVX2-only CPU runs
on a machine with AVX-512: distill-tui with `DISTILL_SIMD=avx2` (the int8, bf16 and fused kernels
capped; a binary built with `--no-default-features --features tui`, so that candle's f32 GEMM has no
AVX-512 kernels either — the driver stops if the run's `CPU kernels:` line says otherwise), PyTorch
with `ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2` and `MKL_ENABLE_INSTRUCTIONS=AVX2`. The
microarchitecture is still this machine's: figures so measured are an emulation, labelled so in the
table and the JSON, not a measurement on an AVX2-only CPU.

distill-tui's per-step tokens/s comes from its `{"event":"step"}` JSON lines; the median is taken
over the steps after the first two (2 warmup + `--steps` timed, like PyTorch's warmup). Before each
configuration the driver waits (up to `--max-wait` s) for the 1-minute load average to fall below
`--max-load`, and records the load before and after each one: other processes on a 2-core machine
change the figures a lot.

`--device cuda` (or `cuda:N`) runs both sides on an NVIDIA GPU: kd_step.py with `--device cuda`,
distill-tui with `DISTILL_DEVICE=cuda:N` (a binary built with `--features cuda`); the default, the
CPU, runs exactly as before. On the GPU a distill-tui run that fails after its training steps (in the
end-of-run evaluation or timing) is recorded with its error instead of stopping the comparison.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_for_quiet(max_load, max_wait):
    start = time.time()
    while load1() >= max_load and time.time() - start < max_wait:
        log(f"load average {load1():.2f} >= {max_load}; waiting")
        time.sleep(20)
    return load1()


def cpu_info():
    """The CPU's model and the flags that decide which precision is fast (Linux /proc/cpuinfo)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags,
            "flags": sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c"))}


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release", "distill-tui")


def gpu_name(device):
    """The GPU's name as nvidia-smi gives it (for the table's heading)."""
    index = device.partition(":")[2] or "0"
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", index],
                           capture_output=True, text=True, timeout=30)
        return p.stdout.strip() or "unknown GPU"
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"


def simd_env(args, side):
    """The variables that cap one side's instruction sets at `--simd` (none for `native`)."""
    if args.simd == "native":
        return {}
    if side == "pytorch":
        return {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    return {"DISTILL_SIMD": args.simd}


def run_pytorch(args, student, dtype):
    cmd = [sys.executable, os.path.join(HERE, "kd_step.py"), "--teacher", args.teacher, "--student", student,
           "--data", args.data, "--dtype", dtype, "--batch", str(args.batch), "--seq-len", str(args.seq_len),
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
    if args.device != "cpu":
        cmd += ["--device", args.device]
    log("$ " + " ".join(f"{k}={v}" for k, v in simd_env(args, "pytorch").items()) + " " + " ".join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=True,
                       env=dict(os.environ, **simd_env(args, "pytorch")))
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"tokens_per_second": r["tokens_per_second"], "median_step_seconds": r["median_step_seconds"],
            "step_seconds": r["step_seconds"], "detail": r}


RECIPE = """\
# Generated by bench/compare.py: one KD workload, timed.
[teacher]
model = "{teacher}"

[student]
model = "{student}"

[data]
train = "{train}"
eval = "{eval}"
seq_len = {seq_len}
eval_tokens = {eval_tokens}

[distill]
loss = "forward_kl"
temperature = 2.0
alpha = 0.9
steps = {steps}
batch_size = {batch}
lr = 5e-4
warmup_steps = 0
weight_decay = 0.01
grad_clip = 1.0
eval_every = {eval_every}
checkpoint_every = {eval_every}
baseline = false
cache_top_k = {k}
precision = "{precision}"
{teacher_precision}seed = 0

[output]
dir = "{out}"
"""


def run_distill(args, student, k, work, precision="f32", teacher_precision=None):
    tag = f"k{k}-{precision}" + (f"-teacher-{teacher_precision}" if teacher_precision else "")
    d = os.path.join(work, f"run-{tag}")
    shutil.rmtree(d, ignore_errors=True)  # a fresh output folder (an old one would be resumed)
    os.makedirs(d, exist_ok=True)
    cache_dir = tempfile.mkdtemp(prefix=f"distill-cache-{tag}-", dir=work)  # cold cache, every time
    steps = args.warmup_dt + args.steps
    recipe = os.path.join(d, "recipe.toml")
    with open(recipe, "w") as f:
        f.write(RECIPE.format(teacher=args.teacher, student=student, train=os.path.abspath(args.data),
                              eval=os.path.abspath(args.eval), seq_len=args.seq_len, eval_tokens=args.eval_tokens,
                              steps=steps, batch=args.batch, eval_every=steps + 1000, k=k, precision=precision,
                              teacher_precision=f'teacher_precision = "{teacher_precision}"\n' if teacher_precision else "",
                              out=os.path.join(d, "out")))
    env = dict(os.environ, DISTILL_CACHE_DIR=cache_dir, **simd_env(args, "distill"))
    if args.device != "cpu":
        env["DISTILL_DEVICE"] = args.device
    cmd = [args.bin, "run", recipe, "--json"]
    log(f"$ DISTILL_CACHE_DIR={cache_dir} " + ("" if args.device == "cpu" else f"DISTILL_DEVICE={args.device} ")
        + " ".join(cmd))
    events = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env) as p:
        for line in p.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                log(line.rstrip())
                continue
            events.append(e)
            message = e.get("message", "") if e.get("event") == "log" else ""
            if message.startswith("CPU kernels:"):
                log(message)
                if args.simd != "native" and "f32 GEMM AVX-512" in message:
                    p.kill()
                    raise SystemExit(f"--simd {args.simd}: {args.bin} still runs candle's f32 GEMM in AVX-512; "
                                     "build it with `cargo build --release --no-default-features --features tui`")
            if e.get("event") == "step":
                log(f"distill-tui {tag} step {e.get('step')}: {e.get('tokens_per_second', 0):.1f} tokens/s "
                    f"loss {e.get('loss', float('nan')):.4f}")
    steps_ev = [e for e in events if e.get("event") == "step" and e.get("role", "student") == "student"]
    failure = None
    if p.returncode != 0:
        if args.device == "cpu" or len(steps_ev) <= args.warmup_dt:
            raise SystemExit(f"distill-tui exited with {p.returncode}: {events[-1] if events else ''}")
        failure = {"exit_code": p.returncode, "last_event": events[-1] if events else None}
        log(f"distill-tui {tag} exited with {p.returncode} after its {len(steps_ev)} steps; timings kept: {failure}")
    tps = [e["tokens_per_second"] for e in steps_ev][args.warmup_dt:]
    summary = next((e for e in reversed(events) if e.get("event") == "summary"), {})
    summary = summary.get("summary", summary)
    tokens = args.batch * args.seq_len
    med = statistics.median(tps)
    return {"tokens_per_second": med, "median_step_seconds": tokens / med,
            "step_seconds": [tokens / x for x in tps],
            "detail": {"recipe": open(recipe).read(), "teacher_cache": summary.get("teacher_cache"),
                       "summary_tokens_per_second": summary.get("tokens_per_second"),
                       "peak_memory_bytes": summary.get("peak_memory_bytes"),
                       "losses": [e.get("loss") for e in steps_ev],
                       **({"failure": failure} if failure else {})}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=default_bin())
    ap.add_argument("--teacher", default="offline/SmolLM2-135M-Instruct-dequantized")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--data", default=os.path.join(REPO, "assets/corpus/train/*.txt"))
    ap.add_argument("--eval", default=os.path.join(REPO, "assets/corpus/eval.txt"))
    ap.add_argument("--eval-tokens", type=int, default=512, help="distill-tui's end-of-run eval (not timed)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3, help="PyTorch untimed steps")
    ap.add_argument("--warmup-dt", type=int, default=2, help="distill-tui steps dropped before the median")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the configurations this many times, alternating; each row pools its steps")
    ap.add_argument("--only", default="pt-f32,pt-bf16,dt-k0,dt-k64,dt-k0-bf16,dt-k64-bf16",
                    help="comma-separated subset")
    ap.add_argument("--max-load", type=float, default=1.5)
    ap.add_argument("--max-wait", type=float, default=600)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--device", default="cpu", help="cpu (the default), cuda or cuda:N: where both sides run")
    ap.add_argument("--simd", choices=["native", "avx2"], default="native",
                    help="avx2: both sides on their AVX2 code paths (an emulation of an AVX2-only CPU; see above)")
    args = ap.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="distill-bench-")
    os.makedirs(work, exist_ok=True)
    student = os.path.join(work, f"student-{args.layers}")
    if not os.path.exists(os.path.join(student, "config.json")):
        cmd = [args.bin, "derive-student", args.teacher, "--layers", str(args.layers), "--out", student]
        log("$ " + " ".join(cmd))
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = cpu_info()
    log(f"cpu: {cpu['model']} ({cpu['cores']} cores), avx512_bf16: {cpu['avx512_bf16']}, amx_bf16: {cpu['amx_bf16']}")
    if args.simd != "native":
        log(f"--simd {args.simd}: both sides capped at {args.simd} (an emulation on this CPU)")

    configs = [
        ("pt-f32", "PyTorch f32 (SDPA)", lambda: run_pytorch(args, student, "f32")),
        ("pt-bf16", "PyTorch bf16 autocast (SDPA)", lambda: run_pytorch(args, student, "bf16")),
        ("dt-k0", "distill-tui, cache_top_k = 0 (full teacher logits every step)",
         lambda: run_distill(args, student, 0, work)),
        ("dt-k0-i8", "distill-tui, cache_top_k = 0, teacher_precision = int8",
         lambda: run_distill(args, student, 0, work, teacher_precision="int8")),
        ("dt-k64", "distill-tui, cache_top_k = 64, cold cache", lambda: run_distill(args, student, 64, work)),
        ("dt-k0-bf16", "distill-tui bf16 autocast, cache_top_k = 0",
         lambda: run_distill(args, student, 0, work, "bf16")),
        ("dt-k64-bf16", "distill-tui bf16 autocast, cache_top_k = 64, cold cache",
         lambda: run_distill(args, student, 64, work, "bf16")),
    ]
    wanted = set(args.only.split(","))
    # Rounds alternate the configurations (A B A B …), so that a slow spell of the machine (a shared
    # host drifts by a third over minutes) falls on all of them; each row pools its rounds' steps.
    runs = {}
    for rnd in range(1, args.rounds + 1):
        for key, label, fn in configs:
            if key not in wanted:
                continue
            before = wait_for_quiet(args.max_load, args.max_wait)
            t = time.time()
            r = fn()
            r.update(round=rnd, load_before=before, load_after=load1(), wall_seconds=time.time() - t)
            runs.setdefault(key, []).append(r)
            log(f"round {rnd}: {label}: {r['tokens_per_second']:.1f} tokens/s "
                f"(load {before:.2f} -> {r['load_after']:.2f})")
    rows = []
    tokens = args.batch * args.seq_len
    for key, label, _ in configs:
        if key not in runs:
            continue
        rs = runs[key]
        steps = [x for r in rs for x in r["step_seconds"]]
        med = statistics.median(steps)
        rows.append({"key": key, "label": label, "tokens_per_second": tokens / med, "median_step_seconds": med,
                     "step_seconds": steps, "load_before": min(r["load_before"] for r in rs),
                     "load_after": max(r["load_after"] for r in rs),
                     "rounds_tokens_per_second": [r["tokens_per_second"] for r in rs],
                     "detail": [r["detail"] for r in rs]})

    # The reference is PyTorch's faster configuration in this run (bf16 autocast where the CPU has
    # AVX512_BF16 or AMX; f32 can win where bf16 is emulated).
    pytorch = [r for r in rows if r["key"].startswith("pt-")]
    ref_row = max(pytorch, key=lambda r: r["tokens_per_second"]) if pytorch else None
    ref = ref_row["tokens_per_second"] if ref_row else None
    ref_name = f"vs {ref_row['key']}" if ref_row else "vs PyTorch"
    where = "" if args.device == "cpu" else f"on {args.device} ({gpu_name(args.device)}), "
    print(f"\nKD step, {args.teacher} -> {args.layers}-layer student, batch {args.batch}x{args.seq_len}, T=2, "
          f"alpha=0.9, {where}{args.threads} threads, median of {args.steps} steps x {args.rounds} rounds; {cpu['model']}, "
          f"avx512_bf16 {'yes' if cpu['avx512_bf16'] else 'no'}"
          + (f"; EMULATED {args.simd.upper()}: both sides capped at {args.simd}" if args.simd != "native" else ""))
    print(f"{'configuration':<64} {'tokens/s':>9} {'s/step':>7} {ref_name:>16} {'load':>11}")
    for r in rows:
        ratio = f"{r['tokens_per_second'] / ref:.2f}x" if ref else "-"
        r["ratio_vs_fastest_pytorch"] = r["tokens_per_second"] / ref if ref else None
        print(f"{r['label']:<64} {r['tokens_per_second']:>9.1f} {r['median_step_seconds']:>7.2f} {ratio:>16} "
              f"{r['load_before']:>5.2f}/{r['load_after']:<5.2f}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"git": rev, "bin": args.bin, "batch": args.batch, "seq_len": args.seq_len, "rounds": args.rounds,
                       "layers": args.layers, "teacher": args.teacher, "threads": args.threads,
                       "cpu": cpu, "simd": args.simd, **({"simd_env": {"distill-tui": simd_env(args, "distill"),
                                                               "pytorch": simd_env(args, "pytorch")}}
                                                   if args.simd != "native" else {}),
                       **({"device": args.device, "gpu": gpu_name(args.device)} if args.device != "cpu" else {}),
                       "reference": ref_row["key"] if ref_row else None, "rows": rows}, f, indent=1)
        log(f"wrote {args.out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU path checked on a machine with an NVIDIA GPU (issue 20), in under 10 minutes, from a copy
# of the checkout and a release binary built with `--features cuda` (bench/cuda-toolchain.sh):
#
#   bash bench/gpu_check.sh [BIN]          # BIN: default $BIN, else target/release/distill-tui
#                                          # (BIN.xz or BIN.gz: unpacked into a temporary folder)
#
#   a. forward pass on the GPU: a run whose student is the model itself (one step at lr 1e-20, so
#      the weights do not move) evaluates it on the same 4096 tokens of assets/corpus/eval.txt on
#      the CPU and on CUDA; perplexity within 1e-3 relative, and KL(model ‖ itself) ~ 0. The demo
#      teacher, plus ../shared/fixtures' tiny llama/qwen2/gpt2 when that folder is there. Golden
#      reference: where python3 has torch (with CUDA) and transformers, the same perplexity from
#      transformers on the GPU (bench/hf_eval.py), within 1e-3 relative.
#   b. one KD step: the same 2-step recipe (demo teacher -> 2-layer derived student, seed 0, same
#      windows) on the CPU and on CUDA; the first step's loss within 1e-3, with the teacher's full
#      logits (cache_top_k = 0) and with the top-32 cache (as assets/recipes/demo.toml); and the CUDA
#      run must finish (its summary written).
#   c. the KD-step benchmark against PyTorch on the same GPU: bench/compare.py --device cuda
#      (SmolLM2-135M -> 8 layers when the hub cache has offline/SmolLM2-135M-Instruct-dequantized,
#      else the demo pair); skipped, saying why, without torch+transformers with CUDA.
#
# Each check prints a PASS/FAIL/SKIP line; a summary ends the output. Exit code: 0 all passed (SKIPs
# allowed), 1 a check failed, 2 the binary cannot start (a CUDA library missing: set
# DISTILL_CUDA_LIBS to the folders holding them), 3 no NVIDIA GPU is visible (nvidia-smi).
# Results: $OUT when set (the device tool's folder; at most 8 files are written), else
# bench/results/gpu-check-DATE/: gpu-check.log, results.json, env.txt (CPU flags, ldd, versions),
# nvidia-smi.txt, kd-bench.json (c), runs.tar.gz (every run's JSON-lines events and stderr).
# Variables: DISTILL_GPU (default cuda:0), GPU_CHECK_SECONDS (the whole budget, default 570),
# DISTILL_CUDA_LIBS (extra library folders, colon-separated).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
START=$SECONDS
LIMIT=${GPU_CHECK_SECONDS:-570}
GPU=${DISTILL_GPU:-cuda:0}
BIN=${1:-${BIN:-target/release/distill-tui}}
if [ -n "${OUT:-}" ]; then RES=$OUT; else RES=bench/results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ); fi
mkdir -p "$RES" && RES=$(cd "$RES" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
exec > >(tee "$RES/gpu-check.log") 2>&1
trap 'tar -czf "$RES/runs.tar.gz" -C "$WORK" --exclude="out-*" --exclude="cache-*" --exclude="bench/*" . 2>/dev/null; rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 NO_COLOR=1
: >"$WORK/results.tsv"

say() { echo "gpu-check: $*"; }
# The seconds a step may take: at most $1, within what is left of the budget.
left() { local l=$((LIMIT - (SECONDS - START))); [ "$l" -lt 1 ] && l=1; [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
verdict() { # NAME PASS|FAIL|SKIP DETAIL (one line)
    local d=${3//$'\t'/ }
    d=${d//$'\n'/ }
    printf '%-4s %-34s %s\n' "$2" "$1" "$d"
    printf '%s\t%s\t%s\n' "$1" "$2" "$d" >>"$WORK/results.tsv"
}

# --- the binary and its libraries ----------------------------------------------------------------
if [ ! -f "$BIN" ]; then
    say "no binary at $BIN: build it with 'source bench/cuda-toolchain.sh && cargo build --release --features cuda' or pass its path"
    exit 2
fi
BIN=$(realpath "$BIN")
case $BIN in
    # A compressed binary (the release binary with CUDA is ~80 MB, 11 MB as .xz): unpacked here.
    *.xz | *.gz)
        python3 -c 'import gzip, lzma, shutil, sys
src = sys.argv[1]
opener = lzma.open if src.endswith(".xz") else gzip.open
with opener(src) as f, open(sys.argv[2], "wb") as g:
    shutil.copyfileobj(f, g)' "$BIN" "$WORK/distill-tui" || { say "cannot unpack $BIN"; exit 2; }
        chmod +x "$WORK/distill-tui"
        say "unpacked $BIN"
        BIN=$WORK/distill-tui
        ;;
esac
missing() { ldd "$BIN" 2>/dev/null | awk '/not found/ {print $1}'; }
if [ -n "$(missing)" ]; then
    # The CUDA libraries the binary links (libcudart, libcublas, libcublasLt, libcurand, libnvrtc)
    # where a CUDA toolkit or PyTorch's pip wheels keep them; libcuda.so.1 comes with the driver.
    cands=()
    IFS=: read -r -a extra <<<"${DISTILL_CUDA_LIBS:-}"
    cands+=("${extra[@]}")
    cands+=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 /usr/lib/x86_64-linux-gnu)
    if command -v python3 >/dev/null; then
        while read -r d; do cands+=("$d"); done < <(python3 -c '
import glob, os, site, sys
for p in site.getsitepackages() + [site.getusersitepackages()]:
    for d in sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib"))):
        print(d)' 2>/dev/null)
    fi
    cands+=(/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib)
    for lib in $(missing); do
        for d in "${cands[@]}"; do
            if [ -n "$d" ] && [ -e "$d/$lib" ]; then
                export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
                say "found $lib in $d"
                break
            fi
        done
    done
fi
if [ -n "$(missing)" ]; then
    ldd "$BIN"
    say "FAIL: $BIN cannot start: missing $(missing | tr '\n' ' ')(libcuda.so.1 comes with the NVIDIA driver; the others with a CUDA 13 toolkit or the nvidia-* pip wheels: set DISTILL_CUDA_LIBS)"
    exit 2
fi

# --- the machine ---------------------------------------------------------------------------------
{
    echo "date: $(date -u +%FT%TZ)"
    echo "git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo 'no .git')"
    echo "binary: $BIN ($("$BIN" --version 2>&1)), $(stat -c %s "$BIN") bytes"
    echo "uname: $(uname -a)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) ($(nproc) cores)"
    echo "cpu flags:$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-)"
    echo "memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
    echo "python3: $(python3 -c 'import sys; print(sys.version.split()[0])' 2>&1)"
    echo "torch: $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"
    echo "transformers: $(python3 -c 'import transformers; print(transformers.__version__)' 2>&1 | tail -1)"
    echo "LD_LIBRARY_PATH: ${LD_LIBRARY_PATH:-}"
    echo "ldd:"
    ldd "$BIN"
} >"$RES/env.txt" 2>&1
HAVE_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >"$RES/nvidia-smi.txt" 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    HAVE_GPU=1
    nvidia-smi -q >>"$RES/nvidia-smi.txt" 2>&1
    say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
else
    echo "nvidia-smi: $(command -v nvidia-smi || echo 'not installed')" >>"$RES/nvidia-smi.txt"
    say "NO NVIDIA GPU visible (nvidia-smi missing or lists no GPU): the CUDA halves will fail; see $RES/nvidia-smi.txt"
fi
say "binary $BIN; CUDA device $GPU; results in $RES"
grep -E '^(cpu|torch|transformers):' "$RES/env.txt" | sed 's/^/gpu-check: /' | cut -c1-200

# --- helpers -------------------------------------------------------------------------------------
# run NAME DEVICE RECIPE: `distill-tui run --json` in $WORK; events in NAME.jsonl; returns its code.
run() {
    local name=$1 dev=$2 recipe=$3 t
    t=$(left 150)
    [ "$t" -gt 5 ] || { echo '{"event":"failed","error":"gpu-check: out of time"}' >"$WORK/$name.jsonl"; return 124; }
    local s=$SECONDS
    (cd "$WORK" && DISTILL_DEVICE=$dev DISTILL_CACHE_DIR="$WORK/cache-$name" timeout "$t" "$BIN" run "$recipe" \
        --output "$WORK/out-$name" --json -q >"$WORK/$name.jsonl" 2>"$WORK/$name.err")
    local rc=$?
    say "run $name on $dev: exit $rc in $((SECONDS - s)) s"
    [ $rc -eq 124 ] && echo '{"event":"failed","error":"timed out"}' >>"$WORK/$name.jsonl"
    return $rc
}
# The value of FIELD (a dotted path) in the first EVENT event of FILE (with step STEP if given).
field() {
    python3 - "$@" <<'PY'
import json, sys
path, event, step, field = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
for line in open(path):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") != event or (step and str(e.get("step")) != step):
        continue
    v = e
    for k in field.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    print("" if v is None else repr(v) if isinstance(v, float) else v)
    break
PY
}
# Why a run failed: its failed event's error, else the end of its stderr.
why() {
    local e
    e=$(field "$WORK/$1.jsonl" failed "" error 2>/dev/null | head -1)  # (a candle error goes on with a backtrace)
    [ -n "$e" ] || e=$(tail -c 300 "$WORK/$1.err" | tr '\n' ' ')
    echo "${e:-no output}" | cut -c1-400
}
# close A B TOL rel|abs: prints the difference; succeeds when within TOL.
close() {
    python3 - "$@" <<'PY'
import sys
a, b, tol, how = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
d = abs(a - b) / max(abs(a), 1e-30) if how == "rel" else abs(a - b)
print(f"{how} diff {d:.2e}")
sys.exit(0 if d <= tol else 1)
PY
}
# recipe FILE TEACHER STUDENT-TOML-LINE STEPS BATCH LR WD K TEMPERATURE
recipe() {
    cat >"$1" <<EOF
# Written by bench/gpu_check.sh.
[teacher]
model = "$2"
[student]
$3
[data]
train = "$REPO/assets/corpus/train/*.txt"
eval = "$REPO/assets/corpus/eval.txt"
seq_len = 128
eval_tokens = 4096
[distill]
loss = "forward_kl"
temperature = $9
alpha = 0.5
steps = $4
batch_size = $5
lr = $6
warmup_steps = 0
weight_decay = $7
eval_every = 1000
checkpoint_every = 1000
seed = 0
baseline = false
cache_top_k = $8
[output]
dir = "out"
EOF
}

TORCH_CUDA=0
if [ $HAVE_GPU = 1 ] && python3 -c 'import torch, transformers, tokenizers; assert torch.cuda.is_available()' >/dev/null 2>&1; then
    TORCH_CUDA=1
fi

# --- a. the forward pass on CUDA against the CPU (and transformers) --------------------------------
models=("$REPO/assets/models/demo-teacher")
for m in tiny-llama tiny-qwen2 tiny-gpt2; do
    [ -f "$REPO/../shared/fixtures/models/$m/config.json" ] && models+=("$(realpath "$REPO/../shared/fixtures/models/$m")")
done
for m in "${models[@]}"; do
    n=$(basename "$m")
    recipe "$WORK/fwd-$n.toml" "$m" "model = \"$m\"" 1 1 1e-20 0.0 0 1.0
    run "fwd-$n-cpu" cpu "$WORK/fwd-$n.toml"
    run "fwd-$n-cuda" "$GPU" "$WORK/fwd-$n.toml"
    cpu=$(field "$WORK/fwd-$n-cpu.jsonl" eval "" metrics.perplexity)
    gpu=$(field "$WORK/fwd-$n-cuda.jsonl" eval "" metrics.perplexity)
    if [ -z "$cpu" ]; then
        verdict "a forward $n" FAIL "the CPU run gave no evaluation: $(why "fwd-$n-cpu")"
    elif [ -z "$gpu" ]; then
        verdict "a forward $n" FAIL "CPU perplexity $cpu; the CUDA run gave none: $(why "fwd-$n-cuda")"
    else
        kl=$(field "$WORK/fwd-$n-cuda.jsonl" eval "" metrics.kl_to_teacher)
        top_c=$(field "$WORK/fwd-$n-cpu.jsonl" eval "" metrics.top1_accuracy)
        top_g=$(field "$WORK/fwd-$n-cuda.jsonl" eval "" metrics.top1_accuracy)
        d=$(close "$cpu" "$gpu" 1e-3 rel) && v=PASS || v=FAIL
        verdict "a forward $n" $v "perplexity CPU $cpu CUDA $gpu ($d); top-1 $top_c / $top_g; KL(self) on CUDA $kl"
    fi
    if [ $TORCH_CUDA = 1 ] && [ -n "$gpu" ]; then
        if hf=$(timeout "$(left 120)" python3 bench/hf_eval.py --model "$m" --data assets/corpus/eval.txt --seq-len 128 \
            --tokens 4096 --device "$GPU" 2>"$WORK/hf-$n.err" | tail -1) && [ -n "$hf" ]; then
            echo "$hf" >"$WORK/hf-$n.json"
            ref=$(python3 -c 'import json,sys; print(repr(json.loads(sys.argv[1])["perplexity"]))' "$hf")
            d=$(close "$ref" "$gpu" 1e-3 rel) && v=PASS || v=FAIL
            verdict "a golden $n (transformers)" $v "perplexity transformers/$GPU $ref, distill-tui CUDA $gpu ($d)"
        else
            verdict "a golden $n (transformers)" FAIL "bench/hf_eval.py failed: $(tail -c 300 "$WORK/hf-$n.err" | tr '\n' ' ')"
        fi
    elif [ "$m" = "${models[0]}" ]; then
        verdict "a golden (transformers)" SKIP "python3 has no torch with CUDA + transformers here (or no GPU)"
    fi
done

# --- b. one KD step on CUDA against the CPU ------------------------------------------------------
for k in 0 32; do
    recipe "$WORK/kd-k$k.toml" "$REPO/assets/models/demo-teacher" "derive = { layers = 2 }" 2 8 1e-3 0.01 $k 2.0
    run "kd-k$k-cpu" cpu "$WORK/kd-k$k.toml"
    run "kd-k$k-cuda" "$GPU" "$WORK/kd-k$k.toml"
    rc_gpu=$?
    cpu=$(field "$WORK/kd-k$k-cpu.jsonl" step 1 loss)
    gpu=$(field "$WORK/kd-k$k-cuda.jsonl" step 1 loss)
    if [ -z "$cpu" ]; then
        verdict "b KD step, cache_top_k $k" FAIL "the CPU run made no step: $(why "kd-k$k-cpu")"
    elif [ -z "$gpu" ]; then
        verdict "b KD step, cache_top_k $k" FAIL "CPU step-1 loss $cpu; the CUDA run made no step: $(why "kd-k$k-cuda")"
    else
        d=$(close "$cpu" "$gpu" 1e-3 abs) && v=PASS || v=FAIL
        extra=""
        for f in soft_loss hard_loss grad_norm; do
            extra+=" $f $(field "$WORK/kd-k$k-cpu.jsonl" step 1 $f | cut -c1-10)/$(field "$WORK/kd-k$k-cuda.jsonl" step 1 $f | cut -c1-10)"
        done
        extra+="; step 2 loss $(field "$WORK/kd-k$k-cpu.jsonl" step 2 loss | cut -c1-10)/$(field "$WORK/kd-k$k-cuda.jsonl" step 2 loss | cut -c1-10)"
        extra+="; tokens/s $(field "$WORK/kd-k$k-cpu.jsonl" step 2 tokens_per_second | cut -d. -f1)/$(field "$WORK/kd-k$k-cuda.jsonl" step 2 tokens_per_second | cut -d. -f1)"
        verdict "b KD step, cache_top_k $k" $v "step-1 loss CPU $cpu CUDA $gpu ($d);$extra (CPU/CUDA)"
    fi
    if [ $rc_gpu -eq 0 ] && [ -n "$(field "$WORK/kd-k$k-cuda.jsonl" summary "" summary.seconds)" ]; then
        verdict "b CUDA run finishes, top_k $k" PASS "summary written ($(field "$WORK/kd-k$k-cuda.jsonl" summary "" summary.seconds | cut -c1-6) s)"
    else
        verdict "b CUDA run finishes, top_k $k" FAIL "exit $rc_gpu: $(why "kd-k$k-cuda")"
    fi
done

# --- c. the KD-step benchmark against PyTorch on the same GPU ------------------------------------
if [ $HAVE_GPU = 0 ]; then
    verdict "c KD benchmark vs PyTorch" SKIP "no NVIDIA GPU"
elif [ $TORCH_CUDA = 0 ]; then
    verdict "c KD benchmark vs PyTorch" SKIP "python3 cannot import torch (with CUDA), transformers and tokenizers: $(python3 -c 'import torch, transformers, tokenizers; print(torch.cuda.is_available())' 2>&1 | tail -1)"
else
    hub=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
    if ls "$hub"/models--offline--SmolLM2-135M-Instruct-dequantized/snapshots/*/config.json >/dev/null 2>&1; then
        bench=(--teacher offline/SmolLM2-135M-Instruct-dequantized --layers 8 --batch 4 --seq-len 256)
        what="SmolLM2-135M -> 8 layers, 4x256"
    else
        bench=(--teacher "$REPO/assets/models/demo-teacher" --layers 2 --batch 16 --seq-len 128)
        what="demo teacher -> 2 layers, 16x128 (SmolLM2 is not in the hub cache $hub)"
    fi
    t=$(left 330)
    say "c: $what, at most $t s"
    if [ "$t" -gt 30 ] && DISTILL_DEVICE= timeout "$t" python3 bench/compare.py --device "$GPU" --bin "$BIN" "${bench[@]}" \
        --steps 8 --warmup 3 --warmup-dt 2 --threads "$(nproc)" --max-wait 0 \
        --only pt-f32,pt-bf16,dt-k0,dt-k64,dt-k0-bf16 --work "$WORK/bench" --out "$RES/kd-bench.json" \
        >"$WORK/bench.out" 2>"$WORK/bench.err"; then
        cat "$WORK/bench.out"
        verdict "c KD benchmark vs PyTorch" PASS "$what; table above, $RES/kd-bench.json"
    else
        tail -20 "$WORK/bench.err"
        verdict "c KD benchmark vs PyTorch" FAIL "bench/compare.py failed or ran out of time ($what); its stderr is in runs.tar.gz"
    fi
fi

# --- summary -------------------------------------------------------------------------------------
pass=$(grep -c $'\tPASS\t' "$WORK/results.tsv")
fail=$(grep -c $'\tFAIL\t' "$WORK/results.tsv")
skip=$(grep -c $'\tSKIP\t' "$WORK/results.tsv")
python3 - "$WORK/results.tsv" "$RES/results.json" "$BIN" "$GPU" "$HAVE_GPU" "$((SECONDS - START))" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t", 2) for l in open(sys.argv[1]) if l.strip()]
json.dump({"binary": sys.argv[3], "device": sys.argv[4], "gpu_visible": sys.argv[5] == "1",
           "seconds": int(sys.argv[6]),
           "checks": [{"name": n, "verdict": v, "detail": d} for n, v, d in rows]}, open(sys.argv[2], "w"), indent=1)
PY
echo
say "$pass passed, $fail failed, $skip skipped in $((SECONDS - START)) s; results in $RES"
if [ $HAVE_GPU = 0 ]; then
    say "NO NVIDIA GPU was visible: run this on a machine with one (nvidia-smi must list it)"
    exit 3
fi
[ "$fail" -eq 0 ] || exit 1
exit 0

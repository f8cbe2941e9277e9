#!/usr/bin/env bash
# Issue "Better students", the real-model table: SmolLM2-135M-Instruct distilled into students with
# about 40% fewer parameters on about one million tokens each — copied blocks (KD and the hard-label
# baseline, copied.toml) and pruned by measured importance (KD, pruned.toml) — then each student's
# held-out perplexity, KL and decode speed (each run's summary.json; the table: report.py, written
# to report.md at the end). Hours on 2 cores: resumable, run it again after an
# interruption and every finished step is kept (a checkpoint every 25 steps; `run --resume`).
#
#   bench/smollm2-1m/run.sh [DISTILL_TUI]      # default: target/release/distill-tui
#
# Needs the teacher in the local hub cache (../shared/scripts/real-models.sh). Writes ../runs-1m/
# (outside the repository): pruned-student/, copied/, pruned/, *.jsonl (events), *.err (progress).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/release/distill-tui}")
out=$(realpath -m ../runs-1m)
mkdir -p "$out"
export HF_HUB_OFFLINE=1
teacher=offline/SmolLM2-135M-Instruct-dequantized
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -o -w 'avx512[a-z_0-9]*\|avx2\|fma\|f16c' /proc/cpuinfo | sort -u | xargs)" | tee -a "$out/cpu.txt"

# The pruned student, the size of 15 copied blocks (the copied student's parameters).
if [ ! -f "$out/pruned-student/config.json" ]; then
    target=$("$bin" derive-student "$teacher" --layers 15 --out "$out/copied-student" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["parameters"])')
    "$bin" derive-student "$teacher" --prune --target-params "$target" --calib ../shared/data/austen/emma.txt \
        --calib-tokens 4096 --seq-len 256 --out "$out/pruned-student.partial" --json > "$out/pruned-student.json"
    mv "$out/pruned-student.partial" "$out/pruned-student"
fi

for name in copied pruned; do
    if [ -f "$out/$name/summary.json" ]; then continue; fi
    resume=()
    if [ -f "$out/$name/checkpoint/checkpoint.json" ]; then
        resume=(--resume)
    else
        rm -rf "$out/$name" # stopped before its first checkpoint: nothing to keep
    fi
    "$bin" run "bench/smollm2-1m/$name.toml" "${resume[@]}" --json >> "$out/$name.jsonl" 2>> "$out/$name.err"
done
echo "finished: $out/copied/summary.json $out/pruned/summary.json"
python3 bench/smollm2-1m/report.py "$out" | tee "$out/report.md"

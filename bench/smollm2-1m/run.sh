#!/usr/bin/env bash
# Issue "Better students", the real-model table: SmolLM2-135M-Instruct distilled into students with
# about 40% fewer parameters on about one million tokens each — pruned by measured importance
# (pruned.toml) and copied blocks (copied.toml), both distilled, and the copied student on hard
# labels only (baseline.toml) — then each student's held-out perplexity, KL and decode speed (each
# run's summary.json; the table: report.py, written to report.md at the end).
#
#   bench/smollm2-1m/run.sh [DISTILL_TUI] [RUN...]   # default: target/release/distill-tui; pruned copied baseline
#
# Each run takes one to two hours on 2 cores with AVX512_BF16 (more without), so they are three
# runs of their own, done one after the other and each kept when it ends: its summary, its step and
# eval events and the CPU it ran on are copied into bench/smollm2-1m/results/NAME/ (small files, to
# commit), and a run with results there is not run again. Resumable within a machine: run the
# script again after an interruption and every step up to the last checkpoint (every 25 steps) is
# kept (`run --resume`).
#
# Needs the teacher in the local hub cache (../shared/scripts/real-models.sh). Writes ../runs-1m/
# (outside the repository): pruned-student/, copied/, baseline/, pruned/, *.jsonl (events), *.err (progress).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/release/distill-tui}")
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(pruned copied baseline)
out=$(realpath -m ../runs-1m)
results=bench/smollm2-1m/results
mkdir -p "$out" "$results"
export HF_HUB_OFFLINE=1
teacher=offline/SmolLM2-135M-Instruct-dequantized
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) threads; flags: $(grep -o -w 'avx512[a-z_0-9]*\|avx2\|fma\|f16c\|asimd\|sve' /proc/cpuinfo | sort -u | xargs)"
echo "cpu: $cpu" | tee -a "$out/cpu.txt"

# The pruned student, the size of 15 copied blocks (the copied student's parameters). Derived again
# on another machine: the plan is a pure function of the teacher and the calibration text (its
# report, committed with the pruned run, says which).
if [[ " ${names[*]} " == *" pruned "* ]] && [ ! -f "$results/pruned/summary.json" ] && [ ! -f "$out/pruned-student/config.json" ]; then
    target=$("$bin" derive-student "$teacher" --layers 15 --out "$out/copied-student" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["parameters"])')
    "$bin" derive-student "$teacher" --prune --target-params "$target" --calib ../shared/data/austen/emma.txt \
        --calib-tokens 4096 --seq-len 256 --out "$out/pruned-student.partial" --json > "$out/pruned-student.json"
    mv "$out/pruned-student.partial" "$out/pruned-student"
fi

for name in "${names[@]}"; do
    if [ -f "$results/$name/summary.json" ]; then
        echo "$name: kept in $results/$name (delete it to run again)"
        continue
    fi
    if [ ! -f "$out/$name/summary.json" ]; then
        resume=()
        if [ -f "$out/$name/checkpoint/checkpoint.json" ]; then
            resume=(--resume)
        else
            rm -rf "$out/$name" "$out/$name.jsonl" # stopped before its first checkpoint: nothing to keep
        fi
        echo "$name: started $(date -u +%FT%TZ) on $cpu" >> "$out/$name.err"
        "$bin" run "bench/smollm2-1m/$name.toml" "${resume[@]}" --json >> "$out/$name.jsonl" 2>> "$out/$name.err"
    fi
    # Keep it: the summary, the steps and evals (the curves), the CPU, and the pruned student's report.
    mkdir -p "$results/$name.partial"
    cp "$out/$name/summary.json" "$results/$name.partial/summary.json"
    grep -E '^\{"event":"(step|eval|summary)"' "$out/$name.jsonl" > "$results/$name.partial/events.jsonl"
    echo "$cpu" > "$results/$name.partial/cpu.txt"
    grep -h "started" "$out/$name.err" | tail -1 >> "$results/$name.partial/cpu.txt" || true
    if [ "$name" = pruned ]; then cp "$out/pruned-student.json" "$results/$name.partial/pruned-student.json"; fi
    rm -rf "$results/$name"
    mv "$results/$name.partial" "$results/$name"
    echo "$name: finished; commit $results/$name"
done
python3 bench/smollm2-1m/report.py "$out" | tee "$out/report.md"

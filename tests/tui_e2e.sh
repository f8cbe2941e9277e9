#!/usr/bin/env bash
# End-to-end test of the workbench as a new user meets it: the release binary in tmux at 100×30
# opens on the demo, checks the pair, starts a run (the step counter and the curve grow between
# two captures), changes T on the Temperature screen, opens Compare after the run (float and
# quantized points) and sets a budget, quits, and the pane is back at the shell with the terminal
# restored; launched again, it opens on the Runs screen listing the finished run, reopens it with
# its curves and Compare points, and `s` on the same recipe starts a numbered run (runs/demo-2)
# without an error; a headless run of the demo answers four `advise` budgets (quantize; distill,
# when its student measured faster than every teacher point; distill then quantize; nothing); then
# a headless eval draws its progress bar. Exits non-zero with a message on failure. The run library and caches live in the work directory (DISTILL_CACHE_DIR).
#
#   cargo build --release && bash tests/tui_e2e.sh
#
# E2E_BIN overrides the binary, E2E_WORKDIR the working directory (default: a fresh temporary
# one, so the run's output does not touch the checkout), E2E_RUN_TIMEOUT the seconds a run may take;
# with E2E_CAPTURES=DIR the Train, Temperature and Compare screens are saved there as text.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${E2E_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/distill-tui}
RUN_TIMEOUT=${E2E_RUN_TIMEOUT:-600}
SESSION=distill-e2e-$$
WORK=${E2E_WORKDIR:-$(mktemp -d)}
LOG=$(mktemp)

fail() {
    echo "tui_e2e: FAIL: $*" >&2
    echo "---- last capture ----" >&2
    tmux capture-pane -p -t "$SESSION" >&2 2>/dev/null || cat "$LOG" >&2
    exit 1
}
cleanup() { tmux kill-session -t "$SESSION" 2>/dev/null || true; }
trap cleanup EXIT

command -v tmux >/dev/null || { echo "tui_e2e: tmux is not installed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "tui_e2e: $BIN missing; run cargo build --release first" >&2; exit 1; }

capture() { tmux capture-pane -p -t "$SESSION" | tee "$LOG"; }

# Waits until the screen matches the extended regex $1 (within $2 seconds, default 30).
wait_for() {
    local pattern=$1 limit=${2:-30} start=$SECONDS
    until capture | grep -Eq -- "$pattern"; do
        (( SECONDS - start < limit )) || fail "waited ${limit}s for /$pattern/"
        sleep 0.2
    done
}

keys() { tmux send-keys -t "$SESSION" "$@"; }
save() { [ -z "${E2E_CAPTURES:-}" ] || { mkdir -p "$E2E_CAPTURES" && cp "$LOG" "$E2E_CAPTURES/$1.txt"; }; }

# The step the Train screen shows for the student, and the number of plotted braille cells.
student_step() { grep -Eo 'student +[0-9]+/' "$LOG" | grep -Eo '[0-9]+' | head -1; }
curve_cells() { perl -CSD -ne '$n += () = /[\x{2801}-\x{28FF}]/g; END { print $n + 0 }' "$LOG"; }

tmux new-session -d -s "$SESSION" -x 100 -y 30 -c "$WORK"
keys "PS1='e2e\$ '; clear" Enter
wait_for '^e2e\$' 10
keys "export DISTILL_CACHE_DIR=$WORK/cache" Enter
keys "$BIN" Enter
wait_for '1 Models' 20
echo "tui_e2e: opened on the Models screen"
grep -q 'teacher' "$LOG" || fail "the Models screen shows no teacher"

keys c
wait_for 'pair: vocabulary' 120
echo "tui_e2e: pair checked"

keys 3
keys s
wait_for 'student +[0-9]+/[0-9]+' 180
capture >/dev/null
first_step=$(student_step); first_cells=$(curve_cells)
sleep 3
capture >/dev/null
second_step=$(student_step); second_cells=$(curve_cells)
echo "tui_e2e: step $first_step → $second_step, curve cells $first_cells → $second_cells"
(( second_step > first_step )) || fail "the step counter did not grow ($first_step → $second_step)"
(( second_cells != first_cells )) || fail "the curve did not change between two captures"

keys 5
keys Enter Enter
wait_for 'T=1\.0' 120
keys +
wait_for 'T=5\.5' 10
echo "tui_e2e: Temperature shows T1=1.0 and T2 raised to 5.5"

keys 3
wait_for 'finished: [0-9]+ steps' "$RUN_TIMEOUT"
save train
keys 4
wait_for 'student float' 10
grep -q 'teacher float' "$LOG" || fail "Compare lacks the teacher point"
grep -Eq 'teacher q8_0|student q4_0' "$LOG" || fail "Compare lacks the quantized points of the run's [quantize] sweep"
# A budget: at most 1 MB and 5% more perplexity than the teacher; the verdict names the path.
keys b 1 Enter d 5 Enter
wait_for 'in budget · distill then quantize: student q4_0' 10
save compare
echo "tui_e2e: Compare shows the run's float and quantized points and a budget verdict"

# Temperature again: the prompt rerun now shows the trained student beside the teacher.
keys 5
keys Enter Enter
wait_for '┌[ ▸]student T1' 60
save temperature
echo "tui_e2e: Temperature shows the trained student beside the teacher"

keys q
wait_for '^e2e\$' 10
[ "$(tmux display -p -t "$SESSION" '#{alternate_on}')" = 0 ] || fail "still on the alternate screen after quitting"
[ "$(tmux display -p -t "$SESSION" '#{cursor_flag}')" = 1 ] || fail "the cursor is still hidden after quitting"
keys "stty -a | grep -Eo -- '-?icanon' | head -1" Enter
wait_for '^-?icanon$' 10
grep -qx 'icanon' <(grep -Eo -- '^-?icanon$' "$LOG") || fail "the terminal is still in raw mode"
echo "tui_e2e: quit; the shell is back with the terminal restored"

# Launch again: the library lists the finished run and the workbench opens on it.
keys clear Enter
keys "$BIN" Enter
wait_for '8 Runs' 20
wait_for 'runs/demo +distill +finished' 10
save runs
echo "tui_e2e: launched again, the Runs screen lists runs/demo as finished"
keys Enter
wait_for 'reopened runs/demo: finished' 10
# The header is drawn before the charts: let the frame finish before counting its curve cells.
sleep 1
capture >/dev/null
(( $(curve_cells) > 50 )) || fail "the reopened run shows no curves"
grep -Eq 'student +120/120' "$LOG" || fail "the reopened run does not show its 120 steps"
keys 4
wait_for 'student float' 10
grep -Eq 'teacher q8_0|student q4_0' "$LOG" || fail "the reopened run lacks its quantized points"
echo "tui_e2e: the run reopens with its curves and its Compare points"
# The same recipe again: a new numbered run, no error popup.
keys 3
keys s
wait_for 'student +[0-9]+/[0-9]+ · loss' 180
grep -q 'Error' "$LOG" && fail "starting the recipe again raised an error"
keys x
wait_for 'cancelled at step' 60
keys q
wait_for '^e2e\$' 10
keys clear Enter
keys "ls runs/demo-2/events.jsonl runs/demo-2/run.json && echo numbered-ok" Enter
wait_for '^numbered-ok' 10
echo "tui_e2e: s on the same recipe started runs/demo-2 (cancelled there, kept for --resume)"

# The advisor on the demo run, headless: four budgets, four answers. The run is made again by
# `distill-tui run` (about a minute): the workbench's run above was timed while this script drove
# the Temperature screen through the teacher and student, and speeds measured beside other work
# are not what a quiet machine gives. The speed bound sits between the measured points (this CPU's
# numbers, read from the run), so the check first states the measured premise: the 2-layer student
# decodes faster than every teacher point. On a machine busy with other work the premise can fail
# (teacher 3 013 against student 2 914 tokens/s beside a training run on both cores): then the
# latency verdict is skipped, saying so, and the three other verdicts are still checked. Whether its
# q4_0 decodes faster than its f32 depends on the CPU at this tiny width (slower on an AVX2-only
# EPYC: 3 325 against 3 841 tokens/s), so that is reported, not asserted: speed is for the
# benchmarks.
(cd "$WORK" && DISTILL_CACHE_DIR=$WORK/cache "$BIN" run "$ROOT/assets/recipes/demo.toml" --output headless/demo -q >/dev/null) \
    || fail "the headless demo run"
advise() { (cd "$WORK" && DISTILL_CACHE_DIR=$WORK/cache "$BIN" advise headless/demo "$@"); }
csv=$(cd "$WORK" && DISTILL_CACHE_DIR=$WORK/cache "$BIN" compare headless/demo --csv) || fail "compare headless/demo --csv"
col() { awk -F, -v p="$1" -v c="$2" '$3 == p { print $c }' <<<"$csv"; }
t_decode=$(awk -F, '$3 ~ /^teacher / && $10 > m { m = $10 } END { print m + 0 }' <<<"$csv")
s_decode=$(col 'student float' 10); q_decode=$(col 'student q4_0' 10)
echo "tui_e2e: measured decode tok/s: teacher's best point $t_decode, student float $s_decode, student q4_0 $q_decode"
(( q_decode > s_decode )) || echo "tui_e2e: note: student q4_0 decodes slower than student float on this CPU"
out=$(advise --max-mb 2 --max-ppl-increase 1) || fail "advise (size, quality)"
grep -q '^verdict: quantize$' <<<"$out" && grep -q 'quantize: teacher q4_0' <<<"$out" || fail "advise --max-mb 2 --max-ppl-increase 1: $out"
if (( s_decode > t_decode )); then
    ms=$(awk -v a="$s_decode" -v b="$t_decode" 'BEGIN { printf "%.4f", 1000 / sqrt(a * b) }')
    out=$(advise --max-ms-per-token "$ms" --max-ppl-increase 5) || fail "advise (decode)"
    grep -q '^verdict: distill$' <<<"$out" && grep -q 'distill: student float' <<<"$out" || fail "advise --max-ms-per-token $ms: $out"
    latency="distill ($ms ms/token, +5%)"
else
    echo "tui_e2e: SKIPPED the latency verdict: the 2-layer student did not decode faster than every teacher point here (a busy machine?)"
    latency="latency verdict skipped"
fi
out=$(advise --max-mb 1 --max-ppl-increase 5) || fail "advise (size, looser quality)"
grep -q '^verdict: distill then quantize$' <<<"$out" && grep -q 'quantize: student q4_0' <<<"$out" || fail "advise --max-mb 1: $out"
out=$(advise --max-mb 0.5) || fail "advise (impossible)"
grep -q 'nothing measured meets it; the nearest, student int3-g32' <<<"$out" || fail "advise --max-mb 0.5: $out"
echo "tui_e2e: advise on the demo run: quantize (2 MB, +1%), $latency, distill then quantize (1 MB, +5%), nothing (0.5 MB)"

# The headless eval on a terminal: a live progress bar with a count and an ETA on stderr while it
# runs (the whole of Persuasion on the demo teacher: several seconds), the result on stdout.
keys clear Enter
keys "$BIN eval $ROOT/assets/models/demo-teacher --data $ROOT/../shared/data/austen/persuasion.txt --seq-len 128" Enter
wait_for 'eval +\[[=> ]+\] [1-9][0-9]*/[0-9]+ windows .*ETA [0-9]' 60
grep -Eq 'scoring [0-9]+ tokens' "$LOG" || fail "eval did not say what it would score"
wait_for '^perplexity ' 180
grep -Eq 'eval +\[=+\] [0-9]+/[0-9]+ windows' "$LOG" || fail "the finished bar did not stay above the result"
echo "tui_e2e: eval on a terminal draws a live progress bar with an ETA"
echo "tui_e2e: 1 passed, 0 failed"

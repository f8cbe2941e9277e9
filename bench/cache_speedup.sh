#!/usr/bin/env bash
# The teacher-logit cache's speed-up in training tokens/s (issue 3, acceptance 4): the same recipe
# run with a fresh cache (cold: the teacher runs every step and fills the cache) and again with the
# filled cache (warm: the teacher is never run), REPEATS times; prints each run and the medians.
#
#   cargo build --release && bash bench/cache_speedup.sh [RECIPE] [REPEATS]
#
# Default recipe: bench/cache-speedup.toml. BIN overrides the binary. Run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:-bench/cache-speedup.toml}
REPEATS=${2:-3}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/distill-tui}
[ -x "$BIN" ] || { echo "cache_speedup: $BIN missing; run cargo build --release first" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RECIPE=$(realpath "$RECIPE")

# Runs the recipe once with cache dir $1 in a fresh working directory; prints tokens/s.
once() {
    local dir
    dir=$(mktemp -d -p "$WORK")
    (cd "$dir" && DISTILL_CACHE_DIR=$1 "$BIN" run "$RECIPE" --json) | tail -1 | python3 -c '
import json, sys
s = json.load(sys.stdin)["summary"]
c = s["teacher_cache"]
print("%.1f %d %d" % (s["tokens_per_second"], c["hits"], c["misses"]))'
}

cold=(); warm=()
for i in $(seq "$REPEATS"); do
    cache="$WORK/cache-$i"
    read -r t hits misses < <(once "$cache")
    echo "run $i cold: $t tokens/s (cache hits $hits, misses $misses)"; cold+=("$t")
    read -r t hits misses < <(once "$cache")
    echo "run $i warm: $t tokens/s (cache hits $hits, misses $misses)"; warm+=("$t")
done
python3 - "${cold[*]}" "${warm[*]}" <<'PY'
import statistics, sys
cold = [float(x) for x in sys.argv[1].split()]
warm = [float(x) for x in sys.argv[2].split()]
c, w = statistics.median(cold), statistics.median(warm)
print(f"median training tokens/s: cold {c:.1f}, warm {w:.1f}; warm/cold = {w / c:.2f}x")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# IQ4_NL against llama.cpp's own quantizer, block for block: the same f32 model quantized to IQ4_NL
# by `llama-quantize --pure` and by `distill-tui quantize --format iq4_nl`, then every tensor both
# files store as IQ4_NL compared byte for byte (gguf-py reads both files: a reader that is neither
# candle nor ours). Then llama.cpp scores our file against the f32 one, as it scores its own.
#
#   bench/iq4nl_vs_llamacpp.sh [MODEL] [DISTILL_TUI]
#
# Needs llama.cpp built (../shared/scripts/llamacpp.sh build GITDIR), a Python with `gguf`
# (PYTHON, default ~/.cache/bench-venv/bin/python) and the model in the local hub cache.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-offline/SmolLM2-135M-Instruct-dequantized}
bin=$(realpath "${2:-target/release/distill-tui}")
py=${PYTHON:-$HOME/.cache/bench-venv/bin/python}
H=${LLAMACPP_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/llamacpp}
work=$(mktemp -d)
export HF_HUB_OFFLINE=1
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -o -w 'avx512[a-z_0-9]*\|avx2\|fma\|f16c' /proc/cpuinfo | sort -u | xargs)"
"$bin" quantize "$model" --format f32 --out "$work/f32.gguf" > /dev/null
"$bin" quantize "$model" --format iq4_nl --out "$work/ours.gguf" > /dev/null
"$H/src/build/bin/llama-quantize" --pure "$work/f32.gguf" "$work/llama.gguf" IQ4_NL > "$work/quantize.log" 2>&1
"$py" - "$work/ours.gguf" "$work/llama.gguf" <<'EOF'
import sys
import numpy as np
from gguf import GGUFReader
ours, theirs = ({t.name: t for t in GGUFReader(p).tensors} for p in sys.argv[1:3])
tensors = blocks = same_blocks = same_tensors = 0
for name, t in theirs.items():
    o = ours.get(name)
    if t.tensor_type.name != "IQ4_NL" or o is None or o.tensor_type.name != "IQ4_NL":
        continue
    a = np.asarray(o.data, dtype=np.uint8).reshape(-1, 18)
    b = np.asarray(t.data, dtype=np.uint8).reshape(-1, 18)
    eq = (a == b).all(axis=1)
    tensors += 1; blocks += len(eq); same_blocks += int(eq.sum()); same_tensors += int(eq.all())
print(f"IQ4_NL tensors in both files: {tensors}; identical tensors: {same_tensors}; "
      f"identical blocks: {same_blocks} of {blocks} ({100.0 * same_blocks / max(blocks, 1):.4f}%)")
EOF
text=../shared/data/austen/persuasion.txt
CHUNKS=64 ../shared/scripts/llamacpp.sh base "$work/f32.gguf" "$text"
for f in llama ours; do CHUNKS=64 ../shared/scripts/llamacpp.sh kl "$work/$f.gguf" "$text"; done
rm -rf "$work"

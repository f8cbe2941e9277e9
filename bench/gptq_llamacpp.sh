#!/usr/bin/env bash
# Our GPTQ files scored by llama.cpp itself: the model quantized by `distill-tui quantize --format
# FORMAT --calib TEXT` (GPTQ inside K-quant super-blocks, IQ4_NL and legacy blocks; ordinary GGUF
# files of llama.cpp's types), then `llama-perplexity --kl-divergence` against the f32 model on 64
# windows of *Persuasion*, as llama.cpp scores its own files.
#
#   bench/gptq_llamacpp.sh [FORMATS] [MODEL] [DISTILL_TUI]
#
# FORMATS defaults to q4_k_m+gptq,q3_k_m+gptq,iq4_nl+gptq. Needs llama.cpp built
# (../shared/scripts/llamacpp.sh build GITDIR) and the model in the local hub cache.
set -euo pipefail
cd "$(dirname "$0")/.."
formats=${1:-q4_k_m+gptq,q3_k_m+gptq,iq4_nl+gptq}
model=${2:-offline/SmolLM2-135M-Instruct-dequantized}
bin=$(realpath "${3:-target/release/distill-tui}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1
text=../shared/data/austen/persuasion.txt
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -o -w 'avx512[a-z_0-9]*\|avx2\|fma\|f16c' /proc/cpuinfo | sort -u | xargs)"
"$bin" quantize "$model" --format f32 --out "$work/f32.gguf" > /dev/null
CHUNKS=64 ../shared/scripts/llamacpp.sh base "$work/f32.gguf" "$text"
for f in ${formats//,/ }; do
    "$bin" quantize "$model" --format "$f" --calib assets/corpus/train/emma.txt --out "$work/$f.gguf" > "$work/$f.log"
    echo "== $f: $(stat -c %s "$work/$f.gguf") bytes; $(grep -m1 -i 'bits/weight' "$work/$f.log" | xargs)"
    CHUNKS=64 ../shared/scripts/llamacpp.sh kl "$work/$f.gguf" "$text"
done

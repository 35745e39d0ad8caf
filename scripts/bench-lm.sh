#!/usr/bin/env bash
# The CPU throughput rows of BENCHMARKS.md for one `lantern` binary: capture at block 15 and at
# full depth, greedy generation, and the SAE step at two shapes. Prints one line per workload.
# Usage: scripts/bench-lm.sh LANTERN_BINARY [PROMPTS.jsonl]   (from the repository root; needs
# cache/smollm2 from scripts/fetch-smollm2.sh)
set -euo pipefail
bin=$1
prompts=${2:-$(mktemp --suffix .jsonl)}
[ -s "$prompts" ] || python3 "$(dirname "$0")/make-bench-prompts.py" "$prompts" >/dev/null
model=cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for hook in 15 29; do
  out=$("$bin" capture --model "$model" --prompts "$prompts" --hook "blocks.$hook.hook_resid_post" \
        --max-tokens-per-seq 256 --batch 8 ${CAPTURE_FLAGS:-} --out "$tmp/c$hook" 2>&1 | tail -1)
  echo "capture blocks.$hook: $out"
  rm -rf "$tmp/c$hook"
done
echo "generate: $("$bin" generate --model "$model" --prompt "Once upon a time, in a small village," \
      --max-new-tokens 64 2>&1 >/dev/null | tail -1)"
for shape in 128,2048,32 768,24576,32; do
  steps=20; [ "$shape" = 768,24576,32 ] && steps=3
  echo "bench sae $shape: $("$bin" bench sae --device cpu --shape "$shape" --batch 4096 --steps $steps 2>&1 | tail -1)"
done

#!/usr/bin/env bash
# `lantern bench search` on a GPU machine (the lent device): a 1M-row d = 576 synthetic store,
# a 16k-latent TopK SAE (2 training steps: the encode cost does not depend on training), then
# diff and direction throughput on cpu and on vulkan. Usage, on the device:
#   VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
#     bash scripts/gpu-search-bench.sh path/to/lantern [workdir]
# (the binary built here with `cargo build --release -p lantern-cli --features lantern-cli/vulkan`,
# stripped; the Vulkan loader installed as /work/.library/device/README.md explains).
set -euo pipefail
bin="$1"
work="${2:-/tmp/search-bench}"
mkdir -p "$work"
[[ -f "$work/acts/manifest.json" ]] || "$bin" acts synth --d 576 --features 4096 --rows 1000000 --out "$work/acts"
[[ -f "$work/sae/cfg.json" ]] || "$bin" sae train --acts "$work/acts" --arch topk --k 32 --d-sae 16384 \
  --steps 2 --batch 4096 --lr rule --device vulkan --quiet --out "$work/sae"
for dev in vulkan cpu; do
  for batch in 1024 4096; do
    echo "== device $dev batch $batch"
    "$bin" bench search "$work/acts" --sae "$work/sae" --device "$dev" --batch "$batch"
  done
done

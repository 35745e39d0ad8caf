#!/usr/bin/env bash
# Prepares, on this CPU machine and before any device time is spent, everything that
# scripts/gpu-bench.sh needs on a lent GPU machine (issue 13 §2):
#   .gpu/lantern.xz       the release binary with SPIR-V (`--features lantern-cli/vulkan`), stripped
#   .gpu/kernel-tests.xz  kernels/tests/wgpu.rs built with SPIR-V (`--features burn/vulkan`)
#   .gl/*.deb             the Vulkan/EGL loaders (/work/.library/device/README.md)
# .gpu/, .gl/ and the separate build folder target-vulkan/ (which keeps target/ warm) are
# ignored through .git/info/exclude. Cold, the two builds take ≈ 20 min on 2 cores.
#
# Then one device run (carry [".gpu", ".gl"], timeout_s 600) does it all:
#   for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig;
#   export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json;
#   xz -dk .gpu/lantern.xz .gpu/kernel-tests.xz && chmod +x .gpu/lantern .gpu/kernel-tests &&
#   bash scripts/gpu-bench.sh .gpu/lantern /tmp/gpu-bench "$OUT" .gpu/kernel-tests
set -euo pipefail
cd "$(dirname "$0")/.."
for d in .gpu .gl target-vulkan; do
  grep -qxF "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >> .git/info/exclude
done
mkdir -p .gpu .gl
export CARGO_TARGET_DIR=target-vulkan

cargo build --release -p lantern-cli --features lantern-cli/vulkan
strip -o .gpu/lantern target-vulkan/release/lantern
tests=$(cargo test --release -p lantern-kernels --features burn/vulkan --test wgpu --no-run \
  --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "wgpu":
        print(m["executable"])')
[[ -x "$tests" ]] || { echo "gpu-prepare: no kernel test binary was built" >&2; exit 1; }
strip -o .gpu/kernel-tests "$tests"
rm -f .gpu/*.xz
xz -T2 -6 .gpu/lantern .gpu/kernel-tests

if ! ls .gl/libvulkan1_*.deb > /dev/null 2>&1; then
  mkdir -p /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  apt-get $o update > /dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
ls -l .gpu .gl
du -sh .gpu .gl

#!/usr/bin/env bash
# Builds sarqc on the GPU machine against PyTorch 2.x's libtorch (with CUDA) and the Debian
# packages unpacked by scripts/gpu-deps.sh (carried as .deps/prefix), then runs the tests.
# Usage (on that machine): bash scripts/build-gpu.sh [ctest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix="$root/.deps/prefix/usr"
[ -d "$prefix" ] || { echo "build-gpu: $prefix missing: run scripts/gpu-deps.sh and carry .deps/prefix" >&2; exit 1; }
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
arch_lib="$prefix/lib/$(uname -m)-linux-gnu"
export LD_LIBRARY_PATH="$arch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
build_dir=${SARQC_BUILD_DIR:-$root/build-gpu}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix" -DCMAKE_INCLUDE_PATH="$prefix/include" \
  -DCMAKE_LIBRARY_PATH="$arch_lib"
cmake --build "$build_dir" --parallel "$(nproc)"
cd "$build_dir"
ctest --output-on-failure --parallel "$(nproc)" "$@"

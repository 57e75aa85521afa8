#!/usr/bin/env bash
# Forward throughput of the streaming model on random llama-shaped layers (TinyLlama-1.1B widths,
# 2 layers, 2048 tokens), fp32 and bf16, with the OpenBLAS/OpenMP thread defaults and with the
# settings `sarqc` applies to itself (see tune_cpu_threading in src/cli/main.cpp).
# Usage: scripts/bench_forward.sh [cpu|cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cpu}
[[ -x build/bin/sarqc_bench_forward ]] || bash scripts/build.sh >/dev/null
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
shape=(2048 5632 2 32 4 2048 1)
for dtype in fp32 bf16; do
  echo -n "library defaults:            "
  env -u OMP_WAIT_POLICY -u OPENBLAS_THREAD_TIMEOUT build/bin/sarqc_bench_forward "${shape[@]}" "$dtype" "$device"
  echo -n "PASSIVE + THREAD_TIMEOUT=4:  "
  OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4 build/bin/sarqc_bench_forward "${shape[@]}" "$dtype" "$device"
done

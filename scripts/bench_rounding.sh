#!/usr/bin/env bash
# Rounding-backend time on synthetic layers with a synthetic Gram matrix (CPU), the shapes of
# issue 5: 4096x4096 and 11008x4096 (out x in), 4-bit g128, beam K=4.
# Usage: scripts/bench_rounding.sh [OUT IN ...]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/sarqc_bench_rounding ]] || bash scripts/build.sh >/dev/null
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
shapes=("$@")
[[ ${#shapes[@]} -gt 0 ]] || shapes=(4096 4096 11008 4096)
for ((i = 0; i < ${#shapes[@]}; i += 2)); do
  build/bin/sarqc_bench_rounding "${shapes[i]}" "${shapes[i+1]}" 4 128 4
done

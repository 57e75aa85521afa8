#!/usr/bin/env bash
# What exact (world-size independent) statistics cost against plain fp32 accumulation: one
# calibration batch of 8,192 tokens added to the Gram accumulators of the 1.1B shape's inputs
# (2048: q/k/v, o, gate/up; 5632: down) and of a 70B shape's (8192; 28672 needs 13 GiB: pass it).
# Not a test: compare the ratio from the same run.
# Usage: scripts/bench_gram.sh [N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/sarqc_bench_gram ]] || bash scripts/build.sh >/dev/null
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(2048 5632 8192)
for n in "${sizes[@]}"; do build/bin/sarqc_bench_gram "$n" 8192 3; done

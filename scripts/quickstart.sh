#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs sarqc on a model
# (default: the stories260K fixture). Usage: scripts/quickstart.sh [MODEL_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"
model=${1:-${SARQC_FIXTURES:-$root/../shared/fixtures}/models/stories260K}
sarqc="${SARQC_BUILD_DIR:-$root/build}/bin/sarqc"

echo "== sarqc inspect --model $model"
"$sarqc" inspect --model "$model"
# Quantization and perplexity evaluation land in the next releases (see README: Status);
# until then the main job stops at the validated model summary.

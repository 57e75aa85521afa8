#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs sarqc on a model
# (default: the stories260K fixture). Usage: scripts/quickstart.sh [MODEL_DIR [TEXT_FILE]]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"
model=${1:-${SARQC_FIXTURES:-$root/../shared/fixtures}/models/stories260K}
sarqc="${SARQC_BUILD_DIR:-$root/build}/bin/sarqc"

text=${2:-${SARQC_FIXTURES:-$root/../shared/fixtures}/text/tinystories_val.txt}

echo "== sarqc inspect --model $model"
"$sarqc" inspect --model "$model"
echo "== sarqc eval --model $model --data $text --max-windows 16"
"$sarqc" eval --model "$model" --data "$text" --max-windows 16
echo "== sarqc generate --model $model --prompt 'Once upon a time'"
"$sarqc" generate --model "$model" --prompt "Once upon a time" --tokens 60
# Quantization (and perplexity before/after it) lands with `sarqc quantize` (README: Status).

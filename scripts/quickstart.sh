#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, quantizes a model with GPTQ and
# prints its perplexity before and after (default: the stories260K fixture, 4 bits, calibrated
# on TinyStories train text, evaluated on the validation text).
# Usage: scripts/quickstart.sh [MODEL_DIR [CALIB_TEXT [EVAL_TEXT]]]   (BITS=3 etc. to change)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"
fixtures=${SARQC_FIXTURES:-$root/../shared/fixtures}
model=${1:-$fixtures/models/stories260K}
calib=${2:-$fixtures/text/tinystories_train.txt}
text=${3:-$fixtures/text/tinystories_val.txt}
bits=${BITS:-4}
out=${SARQC_OUT:-$root/build/quickstart/$(basename "$model")-w$bits}
sarqc="${SARQC_BUILD_DIR:-$root/build}/bin/sarqc"
ppl() { "$sarqc" --log-level warn eval --model "$1" --data "$text" --max-windows 16 --json |
        python3 -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ppl"])'; }

echo "== sarqc quantize --model $model --bits $bits --method gptq --calib $calib --out $out"
"$sarqc" quantize --model "$model" --out "$out" --bits "$bits" --group-size -1 --method gptq \
  --calib "$calib" --force
echo "== perplexity on $(basename "$text") (16 windows)"
before=$(ppl "$model")
after=$(ppl "$out")
echo "before (fp32):        $before"
echo "after (gptq, $bits-bit):  $after"
echo "== sarqc generate --model $out --prompt 'Once upon a time'"
"$sarqc" --log-level warn generate --model "$out" --prompt "Once upon a time" --tokens 40

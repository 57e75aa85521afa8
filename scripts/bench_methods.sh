#!/usr/bin/env bash
# Every preset on the fixture models, measured on the packed checkpoints: perplexity on the first
# 8 windows of tinystories_val.txt (held apart from the calibration text, tinystories_train.txt),
# median [min, max] over seeds, and the quantization time. Environment knobs (defaults):
#   MODELS="stories260K babyllama-tok105"  BITS="4 3 2"  GROUP_SIZES="-1 32"
#   METHODS="rtn awq gptq sarqc gptaq coreq beam sarqc-beam"  SEEDS="0 1 2"  NSAMPLES=32
#   EXTRA="" (more quantize flags, e.g. "--lambda 0.01")
source "$(dirname "$0")/bench_common.sh"

echo "| model | bits | group | fp32 | method | ppl | seconds |"
echo "|---|---|---|---|---|---|---|"
for model in ${MODELS:-stories260K babyllama-tok105}; do
  seqlen=$([[ $model == stories260K ]] && echo 512 || echo 256)
  fp=$(ppl "$fixtures/models/$model")
  for bits in ${BITS:-4 3 2}; do
    for group in ${GROUP_SIZES:--1 32}; do
      for method in ${METHODS:-rtn awq gptq sarqc gptaq coreq beam sarqc-beam}; do
        seeds=${SEEDS:-0 1 2}
        [[ $method == rtn ]] && seeds=0
        results=() times=()
        for seed in $seeds; do
          # shellcheck disable=SC2086
          json=$("$sarqc" --log-level error quantize --model "$fixtures/models/$model" \
            --out "$work/q" --force --bits "$bits" --group-size "$group" --method "$method" \
            --calib "$fixtures/text/tinystories_train.txt" --nsamples "${NSAMPLES:-32}" \
            --seqlen "$seqlen" --seed "$seed" --json ${EXTRA:-})
          times+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["totals"]["seconds"])' "$json")")
          results+=("$(ppl "$work/q")")
        done
        echo "| $model | $bits | $group | $(stats "$fp") | $method | $(stats "${results[@]}") | $(stats "${times[@]}") |"
      done
    done
  done
done

#!/usr/bin/env bash
# RTN vs GPTQ on the fixture models, measured on the packed checkpoints with `sarqc eval`, in the
# protocol of ../shared/fixtures/reference_quant.json: calibration on tinystories_train.txt,
# 32 windows of 512 (stories260K) / 256 (babyllama) tokens, seeds 0-2; evaluation on the first 8
# windows of tinystories_val.txt. Prints a markdown table (median [min, max] over seeds).
# Usage: scripts/bench_quant.sh [extra quantize flags, e.g. --act-order]
source "$(dirname "$0")/bench_common.sh"

echo "| model | bits | group | fp32 | RTN | GPTQ (3 seeds) | GPTQ s/run | unquantized modules |"
echo "|---|---|---|---|---|---|---|---|"
for model in stories260K babyllama-tok105; do
  seqlen=$([[ $model == stories260K ]] && echo 512 || echo 256)
  fp=$(ppl "$fixtures/models/$model")
  for bits in 4 3; do
    for group in -1 32; do
      common=(--model "$fixtures/models/$model" --bits "$bits" --group-size "$group" --force)
      "$sarqc" --log-level error quantize "${common[@]}" --out "$work/rtn" --method rtn >/dev/null
      rtn=$(ppl "$work/rtn")
      results=() times=()
      for seed in 0 1 2; do
        json=$("$sarqc" --log-level error quantize "${common[@]}" --out "$work/gptq" --method gptq \
          --calib "$fixtures/text/tinystories_train.txt" --nsamples 32 --seqlen "$seqlen" \
          --seed "$seed" --json "$@")
        times+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["totals"]["seconds"])' "$json")")
        skipped=$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["unquantized_modules"]))' "$json")
        results+=("$(ppl "$work/gptq")")
      done
      echo "| $model | $bits | $group | $(stats "$fp") | $(stats "$rtn") | $(stats "${results[@]}") | $(stats "${times[@]}") | $skipped |"
    done
  done
done

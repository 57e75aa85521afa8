#!/usr/bin/env bash
# SARQC's small-calibration study: perplexity of `--method sarqc` (per-column saliency) over
# nsamples x λ on the fixture models, 3 seeds each (median [min, max]), packed checkpoints,
# first 8 validation windows. Knobs: MODELS, BITS (3), NSAMPLES_LIST ("4 16 128"),
# LAMBDAS ("0 0.01 0.03 0.1 0.3"), SALIENCY (ones), SEEDS ("0 1 2").
source "$(dirname "$0")/bench_common.sh"

echo "| model | bits | nsamples | saliency | λ | ppl |"
echo "|---|---|---|---|---|---|"
for model in ${MODELS:-stories260K babyllama-tok105}; do
  seqlen=$([[ $model == stories260K ]] && echo 512 || echo 256)
  for n in ${NSAMPLES_LIST:-4 16 128}; do
    for lambda in ${LAMBDAS:-0 0.01 0.03 0.1 0.3}; do
      results=()
      for seed in ${SEEDS:-0 1 2}; do
        "$sarqc" --log-level error quantize --model "$fixtures/models/$model" --out "$work/q" \
          --force --bits "${BITS:-3}" --group-size -1 --method sarqc --lambda "$lambda" \
          --saliency "${SALIENCY:-ones}" --calib "$fixtures/text/tinystories_train.txt" \
          --nsamples "$n" --seqlen "$seqlen" --seed "$seed" >/dev/null
        results+=("$(ppl "$work/q")")
      done
      echo "| $model | ${BITS:-3} | $n | ${SALIENCY:-ones} | $lambda | $(stats "${results[@]}") |"
    done
  done
done

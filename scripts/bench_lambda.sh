#!/usr/bin/env bash
# SARQC's small-calibration study: `--method sarqc` (per-column saliency) over nsamples x λ on
# the fixture models, 3 seeds each (median [min, max]), packed checkpoints. λ is *selected* on
# held-out calibration text (the last 10 % of tinystories_train.txt's lines; calibration uses the
# first 90 %), never on the evaluation text; the validation perplexity (first 8 windows of
# tinystories_val.txt) is reported alongside for the record.
# Knobs: MODELS, BITS (3), NSAMPLES_LIST ("4 16 128"), LAMBDAS ("0 0.01 0.03 0.1 0.3"),
# SALIENCY (ones), SEEDS ("0 1 2").
source "$(dirname "$0")/bench_common.sh"
train="$fixtures/text/tinystories_train.txt"
lines=$(wc -l < "$train")
head -n $((lines * 9 / 10)) "$train" > "$work/calib.txt"
tail -n +$((lines * 9 / 10 + 1)) "$train" > "$work/heldout.txt"
heldout_ppl() { "$sarqc" --log-level error eval --model "$1" --data "$work/heldout.txt" \
                  --max-windows 8 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])'; }

echo "| model | bits | nsamples | saliency | λ | held-out calib ppl (selects λ) | validation ppl |"
echo "|---|---|---|---|---|---|---|"
for model in ${MODELS:-stories260K babyllama-tok105}; do
  seqlen=$([[ $model == stories260K ]] && echo 512 || echo 256)
  for n in ${NSAMPLES_LIST:-4 16 128}; do
    for lambda in ${LAMBDAS:-0 0.01 0.03 0.1 0.3}; do
      held=() val=()
      for seed in ${SEEDS:-0 1 2}; do
        "$sarqc" --log-level error quantize --model "$fixtures/models/$model" --out "$work/q" \
          --force --bits "${BITS:-3}" --group-size -1 --method sarqc --lambda "$lambda" \
          --saliency "${SALIENCY:-ones}" --calib "$work/calib.txt" \
          --nsamples "$n" --seqlen "$seqlen" --seed "$seed" >/dev/null
        held+=("$(heldout_ppl "$work/q")")
        val+=("$(ppl "$work/q")")
      done
      echo "| $model | ${BITS:-3} | $n | ${SALIENCY:-ones} | $lambda | $(stats "${held[@]}") | $(stats "${val[@]}") |"
    done
  done
done

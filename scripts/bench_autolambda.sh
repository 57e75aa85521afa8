#!/usr/bin/env bash
# Issue 17's evidence: gptq vs sarqc (--lambda auto, the default), sarqc --lambda lw, fixed λ, and
# beam vs sarqc-beam (auto) on the fixture models over bits, group sizes, calibration sizes and
# seeds. Each run appends one line to $RESULTS (TSV):
#   model bits group windows seqlen tokens method seed ppl cloze_acc λ_median λ_p90 rounding_s
# and keeps no checkpoint. scripts/summarize_autolambda.py turns the TSV into BENCHMARKS tables.
# Knobs: MODELS, BITS ("2 3 4"), GROUP_SIZES ("-1 32"), SIZES (multiples of the hidden size, "1 2 8 64"
# plus "default" = 128 windows of the model's length), SEEDS ("0 1 2"), METHODS (see below),
# RESULTS (default results-autolambda.tsv), CLOZE (a task file; default: made from
# tinystories_val.txt by scripts/make_cloze.sh).
source "$(dirname "$0")/bench_common.sh"
results=${RESULTS:-results-autolambda.tsv}
cloze=${CLOZE:-$work/cloze.jsonl}
[[ -n ${CLOZE:-} ]] || bash scripts/make_cloze.sh "$fixtures/text/tinystories_val.txt" "$cloze" --items 300 >/dev/null
methods=${METHODS:-"gptq sarqc sarqc:lw beam sarqc-beam"}
for model in ${MODELS:-stories260K babyllama-tok105}; do
  hidden=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hidden_size"])' "$fixtures/models/$model/config.json")
  full=$(python3 -c 'import json,sys; print(min(2048, json.load(open(sys.argv[1]))["max_position_embeddings"]))' "$fixtures/models/$model/config.json")
  for size in ${SIZES:-1 2 8 64 default}; do
    if [[ $size == default ]]; then windows=128 seqlen=$full; else seqlen=64 windows=$((size * hidden / 64)); fi
    for bits in ${BITS:-2 3 4}; do
      for group in ${GROUP_SIZES:--1 32}; do
        for method in $methods; do
          preset=${method%%:*} lambda=()
          [[ $method == *:* ]] && lambda=(--lambda "${method#*:}")
          for seed in ${SEEDS:-0 1 2}; do
            start=$(date +%s.%N)
            "$sarqc" --log-level error quantize --model "$fixtures/models/$model" --out "$work/q" \
              --force --bits "$bits" --group-size "$group" --method "$preset" "${lambda[@]}" \
              --calib "$fixtures/text/tinystories_train.txt" --nsamples "$windows" \
              --seqlen "$seqlen" --seed "$seed" >/dev/null
            seconds=$(python3 -c 'import sys,time; print("%.2f" % (time.time() - float(sys.argv[1])))' "$start")
            p=$(ppl "$work/q")
            acc=$("$sarqc" --log-level error eval --model "$work/q" --task "$cloze" --json |
                  python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"][0]["acc"])')
            lam=$(python3 - "$work/q/report.json" <<'PY'
import json, statistics, sys
mods = [m for m in json.load(open(sys.argv[1]))["modules"] if m.get("lambda", {}).get("mode")]
v = sorted(m["lambda"]["lambda"] for m in mods)
print("%.4g\t%.4g" % (statistics.median(v), v[int(0.9 * (len(v) - 1))]) if v else "-\t-")
PY
)
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.4f\t%.4f\t%s\t%s\n' "$model" "$bits" "$group" \
              "$windows" "$seqlen" "$((windows * seqlen))" "$method" "$seed" "$p" "$acc" "$lam" \
              "$seconds" | tee -a "$results"
          done
        done
      done
    done
  done
done

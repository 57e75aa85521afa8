#!/usr/bin/env bash
# Quality and time on a real trained model (scripts/real_model.sh), side by side with GPTQModel:
# every quantizer gets the same calibration windows (WikiText-2 wiki.valid.tokens, tokenized with
# the model's tokenizer, NSAMPLES windows of SEQLEN tokens at offsets drawn from SEED, passed as
# a JSON array of token-id arrays); each result is scored by `sarqc eval` on wiki.test.raw
# (EVAL_WINDOWS non-overlapping windows of EVAL_SEQLEN tokens from the start): perplexity and the
# KL divergence of the next-token distribution from the full-precision model.
# Appends one tab-separated row per run to RESULTS (default results-real.tsv):
#   model bits group seed quantizer flags wall_s ppl kl
# Usage: scripts/bench_real.sh [QUANTIZER ...]
#   QUANTIZER: gptqmodel | gptqmodel-nogar | fp | NAME=SARQC_QUANTIZE_FLAGS (e.g.
#   "gptq-gar=--method gptq --order gar"); default: fp gptqmodel gptq beam
# Knobs (environment): MODEL=smollm2 BITS=3 GROUP=64 NSAMPLES=32 SEQLEN=512 SEEDS="0"
#   EVAL_SEQLEN=1024 EVAL_WINDOWS=8 THREADS=0 RESULTS=results-real.tsv
#   REPORTS=DIR keeps each sarqc run's report.json as DIR/NAME-wBITS-gGROUP-sSEED.json
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${SARQC_FIXTURES:-../shared/fixtures}
name=${MODEL:-smollm2} bits=${BITS:-3} group=${GROUP:-64}
nsamples=${NSAMPLES:-32} seqlen=${SEQLEN:-512} seeds=${SEEDS:-0}
eval_seqlen=${EVAL_SEQLEN:-1024} eval_windows=${EVAL_WINDOWS:-8} threads=${THREADS:-0}
results=${RESULTS:-results-real.tsv}
(($# > 0)) || set -- fp gptqmodel gptq=--method\ gptq beam=--method\ beam
[[ -x build/bin/sarqc ]] || bash scripts/build.sh >/dev/null
model=$(bash scripts/real_model.sh "$name")
python=$(bash scripts/venv.sh scripts/requirements-{test,torch,loader,gguf}.txt)
sarqc=${SARQC_BIN:-build/bin/sarqc}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$sarqc" --log-level error tokenize --model "$model" "$fixtures/text/wiki.valid.tokens" --json \
  >"$work/ids.json"
windows() {  # SEED -> $work/windows-SEED.json
  "$python" - "$work/ids.json" "$work/windows-$1.json" "$nsamples" "$seqlen" "$1" <<'PY'
import json, random, sys
ids = json.load(open(sys.argv[1]))["ids"]
n, L, seed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
starts = [rng.randrange(0, len(ids) - L) for _ in range(n)]
json.dump([ids[s:s + L] for s in starts], open(sys.argv[2], "w"))
PY
}
score() {  # MODEL_DIR -> "ppl kl"
  "$sarqc" --threads "$threads" --log-level error eval --model "$1" \
    --data "$fixtures/text/wiki.test.raw" --seqlen "$eval_seqlen" --max-windows "$eval_windows" \
    --reference "$model" --json |
    "$python" -c 'import json,sys; r=json.load(sys.stdin); print("%.4f %.5f" % (r["ppl"], r.get("kld_mean", 0.0)))'
}
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$bits" "$group" "$@" | tee -a "$results"; }

echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores" >&2
for seed in $seeds; do
  windows "$seed"
  for q in "$@"; do
    out="$work/out"
    rm -rf "$out"
    case "$q" in
      fp) read -r ppl kl < <(score "$model"); row "$seed" fp "" 0 "$ppl" "$kl"; continue ;;
      gptqmodel | gptqmodel-nogar)
        gar=true; [[ $q == gptqmodel-nogar ]] && gar=false
        t=$(cd "$work" && "$python" "$OLDPWD/scripts/bench_gptqmodel.py" "$model" \
              "$work/windows-$seed.json" "$out" "$bits" "$group" "act_group_aware=$gar" 2>"$work/log" |
            tail -1) || { cat "$work/log" >&2; exit 1; }
        flags="GPTQModel $("$python" -c 'import importlib.metadata as m; print(m.version("gptqmodel"))') act_group_aware=$gar" ;;
      *=*)
        flags=${q#*=} q=${q%%=*}
        start=$(date +%s.%N)
        # shellcheck disable=SC2086
        "$sarqc" --threads "$threads" --log-level error quantize --model "$model" --out "$out" \
          --bits "$bits" --group-size "$group" --calib-tokens "$work/windows-$seed.json" \
          --seed "$seed" $flags >/dev/null
        t=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)") ;;
      *) echo "bench_real.sh: quantizer '$q': expected fp, gptqmodel, gptqmodel-nogar or NAME=FLAGS" >&2
         exit 2 ;;
    esac
    if [ -n "${REPORTS:-}" ] && [ -f "$out/report.json" ]; then
      mkdir -p "$REPORTS" && cp "$out/report.json" "$REPORTS/$q-w$bits-g$group-s$seed.json"
    fi
    read -r ppl kl < <(score "$out")
    row "$seed" "$q" "$flags" "$t" "$ppl" "$kl"
  done
done

#!/usr/bin/env bash
# Side by side on the CPU: GPTQModel's GPTQ and sarqc's gptq and beam on the same fixture, the
# same calibration windows (drawn here, given to both as a JSON array of token-id arrays) and the
# same grid; perplexity of each result measured by sarqc eval. Results: BENCHMARKS.md.
# Usage: scripts/bench_gptqmodel.sh [MODEL [BITS [GROUP [NSAMPLES [SEQLEN]]]]]
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${SARQC_FIXTURES:-../shared/fixtures}
model=$(realpath "${1:-$fixtures/models/babyllama-tok105}")
bits=${2:-4} group=${3:-32} nsamples=${4:-64} seqlen=${5:-128}
[[ -x build/bin/sarqc ]] || bash scripts/build.sh >/dev/null
python=$(bash scripts/venv.sh scripts/requirements-{test,torch,loader}.txt scripts/requirements-bench.txt)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sarqc=build/bin/sarqc
# Windows: seeded random offsets into the tokenized calibration text.
"$sarqc" tokenize --model "$model" "$fixtures/text/tinystories_train.txt" --json >"$work/ids.json"
"$python" - "$work/ids.json" "$work/windows.json" "$nsamples" "$seqlen" <<'PY'
import json, random, sys
ids = json.load(open(sys.argv[1]))["ids"]
n, L = int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
starts = [rng.randrange(0, len(ids) - L) for _ in range(n)]
json.dump([ids[s:s + L] for s in starts], open(sys.argv[2], "w"))
PY
ppl() {
  "$sarqc" --log-level error eval --model "$1" --data "$fixtures/text/tinystories_val.txt" \
    --max-windows 16 --json | "$python" -c 'import json,sys; print("%.4f" % json.load(sys.stdin)["ppl"])'
}
echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
echo "# $(basename "$model"), $bits-bit g$group sym, $nsamples x $seqlen calibration tokens"
echo "| quantizer | wall s | ppl (tinystories_val, 16 windows) |"
echo "|---|---|---|"
echo "| fp32 (none) | – | $(ppl "$model") |"
# GPTQModel writes logs/ into its working directory: run it in the scratch folder.
t=$(cd "$work" && "$python" "$OLDPWD/scripts/bench_gptqmodel.py" "$model" "$work/windows.json" "$work/gptqmodel" "$bits" "$group" 2>/dev/null | tail -1)
echo "| GPTQModel $("$python" -c 'import importlib.metadata as m; print(m.version("gptqmodel"))') gptq | $t | $(ppl "$work/gptqmodel") |"
for method in gptq beam; do
  start=$(date +%s.%N)
  "$sarqc" --log-level error quantize --model "$model" --out "$work/$method" --method "$method" \
    --bits "$bits" --group-size "$group" --calib-tokens "$work/windows.json" >/dev/null
  t=$(echo "$(date +%s.%N) - $start" | bc)
  printf "| sarqc %s | %.1f | %s |\n" "$method" "$t" "$(ppl "$work/$method")"
done

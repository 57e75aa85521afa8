# Sourced by the quantization benchmarks: builds if needed and defines
#   $fixtures, $work (removed on exit), $sarqc,
#   ppl MODEL_DIR   perplexity on the first 8 windows of tinystories_val.txt
#   stats V...      "median [min, max]" (or the single value)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x build/bin/sarqc ]] || bash scripts/build.sh >/dev/null
fixtures=${SARQC_FIXTURES:-../shared/fixtures}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sarqc=${SARQC_BIN:-build/bin/sarqc}  # SARQC_BIN: a copy keeps long runs independent of rebuilds
ppl() { "$sarqc" --log-level error eval --model "$1" --data "$fixtures/text/tinystories_val.txt" \
          --max-windows 8 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])'; }
stats() { python3 -c 'import sys,statistics as s; v=sorted(map(float,sys.argv[1:]));
print("%.4f [%.4f, %.4f]" % (s.median(v), v[0], v[-1]) if len(v)>1 else "%.4f" % v[0])' "$@"; }

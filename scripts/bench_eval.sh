#!/usr/bin/env bash
# Eval throughput on the fixture models (the reference.json protocol), fp32 and bf16 activations.
# Usage: scripts/bench_eval.sh [extra sarqc global flags, e.g. --threads 2 or --device cuda]
# Prints one line per run: model, text, dtype, ppl, scored tokens, forward seconds, tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/sarqc ]] || bash scripts/build.sh >/dev/null
fixtures=${SARQC_FIXTURES:-../shared/fixtures}
[[ -d $fixtures/models ]] || { echo "fixtures not found at $fixtures (set SARQC_FIXTURES)" >&2; exit 3; }
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-18s %-22s %-5s %9s %7s %8s %9s\n' model text dtype ppl tokens fwd_s tok/s
for model in stories260K babyllama-tok105; do
  for text in tinystories_val.txt wiki.test.raw; do
    for dtype in fp32 bf16; do
      json=$(build/bin/sarqc --log-level warn "$@" eval --model "$fixtures/models/$model" \
        --data "$fixtures/text/$text" --max-windows 16 --dtype "$dtype" --json 2>/dev/null)
      python3 - "$model" "$text" "$dtype" "$json" <<'PY'
import json, sys
m, t, d, j = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
print(f"{m:<18} {t:<22} {d:<5} {j['ppl']:9.4f} {j['scored_tokens']:7d} "
      f"{j['forward_seconds']:8.3f} {j['tokens_per_second']:9.0f}")
PY
    done
  done
done

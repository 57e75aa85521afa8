#!/usr/bin/env bash
# Tokenizer encode throughput on one core (the encoder is single-threaded): the real
# tokenizer.json files of the conformance tests (../shared/fixtures/tokenizers) and the fixtures'
# sentencepiece models, on English text.
# Usage: scripts/bench_tokenizer.sh [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/sarqc_bench_tokenizer ]] || bash scripts/build.sh >/dev/null
repeat=${1:-3}
fixtures=${SARQC_FIXTURES:-../shared/fixtures}
texts=("$fixtures/text/tinystories_val.txt" "$fixtures/text/wiki.test.raw" "$fixtures/text/tinyshakespeare.txt")
echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), one core (taskset -c 0)"
for package in llama3 qwen3 llama2 gemma; do
  taskset -c 0 build/bin/sarqc_bench_tokenizer "$fixtures/tokenizers/$package" "$repeat" "${texts[@]}"
done
taskset -c 0 build/bin/sarqc_bench_tokenizer "$fixtures/models/babyllama-tok105" "$repeat" "${texts[@]}"

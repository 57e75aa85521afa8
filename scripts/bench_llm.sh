#!/usr/bin/env bash
# Quantize random-weight checkpoints with the exact shapes of published models (bf16, sharded like
# hub checkpoints, written by the project's own code) and report, per layer, where the time went
# (forward / statistics / rounding / write), the achieved GFLOP/s of each phase against this
# machine's measured fp32 GEMM rate, and the peak anonymous and mapped memory against the
# estimate. Then one module of each large shape side by side: sarqc's gptq and beam, and
# GPTQModel's GPTQ (PyPI, in .venv) on the CPU when it is installed.
# Not a test: timings on shared machines vary run to run; compare ratios from the same run.
#
# Usage: scripts/bench_llm.sh [SHAPE[:LAYERS] ...]     (default: the issue-14 set below)
#   SARQC_BENCH_DIR   where checkpoints go (default .cache/bench-llm; ~6 GB for the default set)
#   BENCH_METHODS     methods per checkpoint (default "gptq beam")
#   BENCH_MODULES     0 skips the per-module comparison; BENCH_MODELS=0 skips the checkpoints
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/sarqc_bench_make_model && -x build/bin/sarqc_bench_rounding ]] ||
  bash scripts/build.sh >/dev/null
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
dir=${SARQC_BENCH_DIR:-.cache/bench-llm}
mkdir -p "$dir"
specs=("$@")
[[ ${#specs[@]} -gt 0 ]] || specs=(tinyllama-1.1b llama-2-7b:2 llama-3-8b:2)
methods=${BENCH_METHODS:-gptq beam}
nsamples=4 seqlen=512   # the issue's command: 2,048 calibration tokens

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
gemm=$(build/bin/sarqc_bench_rounding --gemm 2048)
echo "fp32 GEMM rate (2048^3, ATen): $gemm GFLOP/s"

[[ ${BENCH_MODELS:-1} == 1 ]] || specs=()
for spec in ${specs[@]+"${specs[@]}"}; do
  shape=${spec%%:*}
  layers=""; [[ $spec == *:* ]] && layers=${spec##*:}
  model="$dir/$shape${layers:+-$layers}"
  [[ -f $model/config.json ]] || build/bin/sarqc_bench_make_model "$shape" "$model" $layers >/dev/null
  vocab=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json")
  tokens="$dir/calib-$vocab.i32"
  [[ -f $tokens ]] || build/bin/sarqc_bench_make_model tokens $((nsamples * seqlen * 4)) "$vocab" "$tokens"
  for method in $methods; do
    out="$dir/out-$shape-$method"
    rm -rf "$out"
    start=$(date +%s.%N)
    build/bin/sarqc --log-level warn quantize --model "$model" --bits 4 --group-size 128 \
      --method "$method" --calib-tokens "$tokens" --nsamples $nsamples --seqlen $seqlen \
      --out "$out" --json >/dev/null
    wall=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
    python3 - "$model/config.json" "$out/report.json" "$gemm" "$method" "$wall" "$shape" <<'PY'
import json, sys
cfg, rep = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
gemm, method, wall, shape = float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
d, f, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
hd = d // cfg["num_attention_heads"]
kv = cfg["num_key_value_heads"] * hd
N = rep["nsamples"] * rep["seqlen"]
T = rep["seqlen"]
# FLOPs per layer: every linear once per token (+ causal attention), the Grams (full GEMMs of
# [n, N] by [N, n]: q/k/v share one, gate/up one), and GPTQ per module: Cholesky n^3/3 plus the
# lazy-block updates m*n^2.
mods = [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]
params = sum(m * n for m, n in mods)
fwd = 2 * N * params + 2 * rep["nsamples"] * T * T * d  # q·k and p·v, causal half
stats = 2 * N * (d * d + d * d + d * d + f * f)
rnd = sum(n ** 3 / 3 + m * n * n for m, n in mods)
layers = rep["layers"]
def mean(key): return sum(l[key] for l in layers) / len(layers)
t = {k: mean(k + "_seconds") for k in ("forward", "statistics", "rounding", "write")}
per_layer = mean("seconds")
tot = rep["totals"]
print(f"\n{shape} ({L} layers, d={d}, ffn={f}, kv={kv}) {method}: {wall} s wall, "
      f"{per_layer:.2f} s/layer, {N} calibration tokens")
print(f"  per layer    forward {t['forward']:.2f} s ({fwd/1e9:.0f} GFLOP, "
      f"{fwd/1e9/max(t['forward'],1e-9):.0f} GFLOP/s)  statistics {t['statistics']:.2f} s "
      f"({stats/1e9:.0f} GFLOP, {stats/1e9/max(t['statistics'],1e-9):.0f} GFLOP/s)  rounding "
      f"{t['rounding']:.2f} s  write {t['write']:.2f} s")
if method == "gptq":
    ideal = (fwd + stats + rnd) / 1e9 / gemm
    print(f"  GPTQ rounding {rnd/1e9:.0f} GFLOP/layer ({rnd/1e9/max(t['rounding'],1e-9):.0f} GFLOP/s);"
          f" the whole layer at the GEMM rate: {ideal:.2f} s -> measured/ideal {per_layer/ideal:.1f}x")
print(f"  memory       peak anonymous {tot['peak_anonymous_bytes']/2**20:.0f} MiB, estimate "
      f"{tot['estimated_peak_bytes']/2**20:.0f} MiB (ratio {tot['peak_anonymous_bytes']/tot['estimated_peak_bytes']:.2f}), "
      f"mapped checkpoint {tot['peak_mapped_bytes']/2**20:.0f} MiB")
PY
  done
done

[[ ${BENCH_MODULES:-1} == 1 ]] || exit 0
echo
echo "# one module, 4-bit g128, 2048 tokens: seconds (sarqc: synthetic Gram; GPTQModel: from activations)"
for shape in "2048 5632" "4096 4096" "11008 4096"; do
  set -- $shape
  build/bin/sarqc_bench_rounding "$1" "$2" 4 128 4 gptq beam | sed 's/^/sarqc /'
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import gptqmodel' 2>/dev/null; then
    # GPTQModel writes logs/ into its working directory: run it in the scratch folder.
    (cd "$dir" && "$OLDPWD/.venv/bin/python" "$OLDPWD/scripts/bench_gptqmodel_module.py" "$1" "$2" \
       2>/dev/null | grep "^gptqmodel ")
  else
    echo "GPTQModel not installed (bash scripts/venv.sh scripts/requirements-bench.txt)"
  fi
done
echo "GPU (Llama-2-7B shape, 128 x 2048 tokens, W4 g128 gptq/beam on one H200): not measured here"

# Sourced by bench_resume.sh and bench_dist.sh (from the repository root): bench_llm.sh's
# TinyLlama-1.1B-shaped checkpoint and calibration tokens, made once, and its command's sizes.
#   defines $dir, $model, $tokens, $nsamples, $seqlen; prints the machine line
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
dir=${SARQC_BENCH_DIR:-.cache/bench-llm}
nsamples=4 seqlen=512   # bench_llm.sh's command: 2,048 calibration tokens
mkdir -p "$dir"
model=$dir/tinyllama-1.1b
[[ -f $model/config.json ]] || build/bin/sarqc_bench_make_model tinyllama-1.1b "$model" >/dev/null
tokens=$dir/calib-32000.i32
[[ -f $tokens ]] || build/bin/sarqc_bench_make_model tokens $((nsamples * seqlen * 4)) 32000 "$tokens"
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

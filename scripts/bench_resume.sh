#!/usr/bin/env bash
# What resuming costs on the 1.1B-shaped checkpoint of scripts/bench_llm.sh (BENCHMARKS.md,
# "Resuming"): an uninterrupted run; the same command killed (SARQC_FAULT, as kill -9 would) in
# layer 11 of 22 and rerun; the byte comparison of the two outputs; the time to save the state
# per layer and to restore it, against replaying the 11 quantized layers; and saving/restoring a
# stream of the default calibration size (128 x 2048 tokens).
# Not a test: timings on shared machines vary run to run; compare ratios from the same run.
#
# Usage: scripts/bench_resume.sh
#   SARQC_BENCH_DIR   where bench_llm.sh keeps its checkpoints (default .cache/bench-llm)
#   BENCH_METHOD      default gptq
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/sarqc_bench_resume ]] || bash scripts/build.sh >/dev/null
method=${BENCH_METHOD:-gptq}
source scripts/bench_tinyllama.sh
quantize() {  # OUT LOG [NAME=VALUE...]
  local out=$1 log=$2; shift 2
  env "$@" build/bin/sarqc quantize --model "$model" --bits 4 --group-size 128 --method "$method" \
    --calib-tokens "$tokens" --nsamples $nsamples --seqlen $seqlen --out "$out" 2>"$log" >/dev/null
}
now() { date +%s.%N; }
rm -rf "$dir/resume-a" "$dir/resume-b" "$dir/.resume-b.sarqc-work"
t0=$(now); quantize "$dir/resume-a" "$dir/resume-a.log"; t1=$(now)
# 7 quantized modules per layer: the 78th is the first of layer 11 (0-based), 11 layers saved.
quantize "$dir/resume-b" "$dir/resume-b1.log" SARQC_FAULT=rounding:78 || echo "killed: exit $?"
t2=$(now); quantize "$dir/resume-b" "$dir/resume-b2.log"; t3=$(now)
grep -h "resuming at layer" "$dir/resume-b2.log" | sed 's/^.*info: /log: /'
for f in "$dir"/resume-a/*; do
  name=$(basename "$f")
  [[ $name == report.json ]] || cmp -s "$f" "$dir/resume-b/$name" || echo "DIFFERS: $name"
done
echo "outputs compared byte for byte (all files but report.json)"
replay=$(build/bin/sarqc_bench_resume replay "$dir/resume-a" "$tokens" $nsamples $seqlen 11)
python3 - "$dir/resume-a/report.json" "$dir/resume-b/report.json" "$t0" "$t1" "$t2" "$t3" "$replay" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
t0, t1, t2, t3 = map(float, sys.argv[3:7])
replay = json.loads(sys.argv[7])
sa = a["sessions"][0]
print(f"uninterrupted: {t1 - t0:.1f} s wall; state saved after each of 22 layers: "
      f"{sa['state_seconds']:.2f} s in all, {sa['state_seconds'] / 22 * 1000:.0f} ms per layer")
killed, resumed = b["sessions"]
print(f"interrupted run: {killed['layers_done']} layers saved in {killed['seconds']:.1f} s; "
      f"rerun: {t3 - t2:.1f} s wall, state restored in {resumed['restore_seconds']:.3f} s, "
      f"{resumed['layers_done']} layers")
print(f"interrupted + rerun: {killed['seconds'] + t3 - t2:.1f} s against {t1 - t0:.1f} s "
      f"uninterrupted (work lost: the part of layer 11 done before the kill)")
fwd = sum(l["forward_seconds"] for l in a["layers"][:11])
print(f"replay instead: X_q through the 11 quantized layers {replay['seconds']:.2f} s "
      f"({replay['tokens']} tokens; the run's own forward time of those layers: {fwd:.2f} s), "
      f"against {resumed['restore_seconds']:.3f} s to restore the saved streams")
PY
echo "state save and restore at the default calibration size (128 x 2048 tokens, d = 2048, fp32):"
build/bin/sarqc_bench_resume persist 2048 $((128 * 2048)) 2048 "$dir/persist-bench"
rm -rf "$dir/resume-a" "$dir/resume-b"

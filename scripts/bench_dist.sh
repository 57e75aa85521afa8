#!/usr/bin/env bash
# One process against two ranks (--nproc 2, c10d/Gloo on loopback) on the 1.1B-shaped checkpoint
# of scripts/bench_llm.sh with its command (W4 g128 gptq, 4 x 512 calibration tokens): wall
# time, per-layer phases (statistics include the all-reduce), the bytes all-reduced per layer,
# and how far the two outputs are apart. On a 2-core machine the two ranks share the cores
# (--threads 1 each against --threads 2): expect little speed-up here.
# Not a test: timings on shared machines vary run to run; compare ratios from the same run.
#   SARQC_BENCH_DIR   where bench_llm.sh keeps its checkpoints (default .cache/bench-llm)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x build/bin/sarqc ]] || bash scripts/build.sh >/dev/null
source scripts/bench_tinyllama.sh
run() {  # OUT THREADS [args...]
  local out=$1 threads=$2; shift 2
  rm -rf "$out"
  local start; start=$(date +%s.%N)
  build/bin/sarqc --log-level warn --threads "$threads" quantize --model "$model" --bits 4 \
    --group-size 128 --method gptq --calib-tokens "$tokens" --nsamples $nsamples \
    --seqlen $seqlen --out "$out" "$@" >/dev/null
  python3 -c "import time; print(f'{time.time() - $start:.1f}')"
}
w1=$(run "$dir/dist-1" 2)
w2=$(run "$dir/dist-2" 1 --nproc 2)
py=.venv/bin/python  # numpy and safetensors for the code comparison (scripts/venv.sh)
[[ -x $py ]] || py=python3
"$py" - "$dir/dist-1" "$dir/dist-2" "$w1" "$w2" "$model/config.json" <<'PY'
import json, sys
a, b, w1, w2, cfg = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.load(open(sys.argv[5]))
d, f = cfg["hidden_size"], cfg["intermediate_size"]
# all-reduced per layer: one Gram per distinct input ([q,k,v], [o], [gate,up], [down]) as exact
# integers (two int64 per element), plus |x| sums (likewise) and counts
volume = (3 * d * d + f * f) * 16 + (3 * d + f) * 16
# broadcast per layer by the owners: every module's dequantized weight (fp32) to every rank
h, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
hd = d // h
weights = d * d * 2 + 2 * kv * hd * d + 3 * d * f
for name, out, wall in (("1 process, 2 threads", a, w1), ("2 ranks, 1 thread each", b, w2)):
    rep = json.load(open(out + "/report.json"))
    L = rep["layers"]
    mean = lambda k: sum(l[k] for l in L) / len(L)
    print(f"{name}: {wall} s wall, {mean('seconds'):.2f} s/layer (forward {mean('forward_seconds'):.2f}, "
          f"statistics {mean('statistics_seconds'):.2f}, rounding {mean('rounding_seconds'):.2f}, "
          f"write {mean('write_seconds'):.2f})")
print(f"all-reduced per layer: {volume / 2**20:.1f} MiB (ring: each rank sends and receives "
      f"2(W-1)/W of it); broadcast per layer: {weights * 4 / 2**20:.1f} MiB of dequantized "
      f"weights, and the codes (int32) of the modules rank 0 does not own")
try:
    import numpy as np
    from safetensors import safe_open
except ImportError:
    sys.exit(0)
import glob
same = total = 0
for fa in sorted(glob.glob(a + "/*.safetensors")):
    # only the int32 qweights: numpy has no bf16 for the unquantized tensors
    with safe_open(fa, "np") as ha, safe_open(fa.replace(a, b), "np") as hb:
        for k in ha.keys():
            if not k.endswith("qweight"):
                continue
            x, y = ha.get_tensor(k).view(np.uint8), hb.get_tensor(k).view(np.uint8)
            xs, ys = np.concatenate([x & 15, x >> 4]), np.concatenate([y & 15, y >> 4])
            same += int((xs == ys).sum()); total += xs.size
print(f"identical 4-bit codes, 2 ranks vs 1 process: {100 * same / total:.2f} %")
import filecmp
print("model files byte-identical:", all(filecmp.cmp(fa, fa.replace(a, b), shallow=False)
                                         for fa in sorted(glob.glob(a + "/*.safetensors"))))
PY
rm -rf "$dir/dist-1" "$dir/dist-2"

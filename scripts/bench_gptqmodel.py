"""GPTQModel's GPTQ on the CPU, for scripts/bench_gptqmodel.sh: quantizes MODEL with the given
calibration windows (a JSON array of token-id arrays, the same file sarqc gets) and saves it.

Usage: python bench_gptqmodel.py MODEL WINDOWS.json OUT BITS GROUP_SIZE
Prints the wall time of load + quantize + save in seconds.
"""
import json
import os
import sys
import time
import warnings

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
warnings.filterwarnings("ignore")

from gptqmodel import GPTQModel, QuantizeConfig  # noqa: E402


def main():
    model, windows_file, out, bits, group_size = sys.argv[1:]
    with open(windows_file) as f:
        windows = json.load(f)
    data = [{"input_ids": w, "attention_mask": [1] * len(w)} for w in windows]
    config = QuantizeConfig(bits=int(bits), group_size=int(group_size), desc_act=False, sym=True,
                            damp_percent=0.01)
    start = time.time()
    m = GPTQModel.load(model, config, device="cpu")
    m.quantize(data, batch_size=1)
    m.save(out)
    print(f"{time.time() - start:.1f}")


if __name__ == "__main__":
    main()

"""GPTQModel's GPTQ on the CPU, for scripts/bench_gptqmodel.sh and scripts/bench_real.sh:
quantizes MODEL with the given calibration windows (a JSON array of token-id arrays, the same
file sarqc gets) and saves it. Without KEY=VALUE settings the configuration is the one
bench_gptqmodel.sh has always used (desc_act off, damp 0.01); with any, GPTQModel's own
defaults apart from bits, group size and the settings given (e.g. act_group_aware=false).

Usage: python bench_gptqmodel.py MODEL WINDOWS.json OUT BITS GROUP_SIZE [KEY=VALUE ...]
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
    model, windows_file, out, bits, group_size = sys.argv[1:6]
    settings = {}
    for item in sys.argv[6:]:
        key, value = item.split("=", 1)
        settings[key] = json.loads(value)
    with open(windows_file) as f:
        windows = json.load(f)
    data = [{"input_ids": w, "attention_mask": [1] * len(w)} for w in windows]
    if settings:
        config = QuantizeConfig(bits=int(bits), group_size=int(group_size), **settings)
    else:
        config = QuantizeConfig(bits=int(bits), group_size=int(group_size), desc_act=False,
                                sym=True, damp_percent=0.01)
    start = time.time()
    m = GPTQModel.load(model, config, device="cpu")
    m.quantize(data, batch_size=1)
    m.save(out)
    print(f"{time.time() - start:.1f}")


if __name__ == "__main__":
    main()

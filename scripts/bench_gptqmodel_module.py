"""GPTQModel's GPTQ on one nn.Linear on the CPU (scripts/bench_llm.sh): 2048 tokens of
activations with a decaying channel scale, 4-bit g128 symmetric, no act-order.

Usage: python bench_gptqmodel_module.py OUT IN     Prints the quantize() time in seconds.
"""
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from gptqmodel import QuantizeConfig  # noqa: E402
from gptqmodel.quantization.gptq import GPTQ  # noqa: E402


def main():
    out_features, in_features = int(sys.argv[1]), int(sys.argv[2])
    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, out_features, bias=False)
    linear.weight.data = torch.randn(out_features, in_features) * 0.02
    gptq = GPTQ(linear, QuantizeConfig(bits=4, group_size=128, desc_act=False, sym=True,
                                       damp_percent=0.01))
    gptq.quantizer.configure(perchannel=True)  # as GPTQModel's own processor does
    x = torch.randn(1, 2048, in_features) * torch.linspace(1.0, 0.05, in_features)
    gptq.add_batch(x, None)
    start = time.time()
    gptq.quantize(blocksize=128)
    print(f"gptqmodel  {out_features}x{in_features} 4-bit g128: {time.time() - start:7.2f} s")


if __name__ == "__main__":
    main()

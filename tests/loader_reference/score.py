"""A real loader on sarqc's checkpoints: transformers' AutoModelForCausalLM (GPTQ through optimum
and GPTQModel's CPU kernels) loads each folder and scores the token windows sarqc scores.

Usage: python score.py <jobs.json> <output.json>
jobs.json: [{"folder": ..., "inputs": [[ids...]...], "targets": [[ids...]...]}, ...]; a job with
"logits": false leaves the logits out (large vocabularies). The output maps each folder to
{"mean_nll", "target_logprobs" (log p of each target, per window), "logits" (first window),
"kernels", "missing_keys"} or, when the loader refuses the folder, {"error": one line, "trace":
the end of the traceback}.
"""
import json
import os
import sys
import traceback
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# GPTQModel's CPU kernels torch.compile their dequantization: 1-2 s of tracing per module and
# format, most of a loader test's time, for the same numbers eager mode gives.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, GPTQConfig  # noqa: E402


def loading_config(folder):
    """GPTQModel's plain torch kernel for a GPTQ folder. Left to choose, GPTQModel takes an
    AVX512-BF16 kernel on CPUs that have it, which computes in bf16 and moves the perplexity by
    more than the 0.1 % the tests hold the format to (a CI machine did); fp32 dequantization is
    what sarqc's forward does."""
    with open(os.path.join(folder, "config.json")) as f:
        qc = json.load(f).get("quantization_config")
    if not qc or qc.get("quant_method") != "gptq":
        return {}
    return {"quantization_config": GPTQConfig(bits=qc["bits"], backend="torch")}


PINNED_KERNEL = "TorchLinear"  # what backend="torch" selects in GPTQModel 7.7


def score(folder, inputs, targets, with_logits):
    model, info = AutoModelForCausalLM.from_pretrained(
        folder, device_map="cpu", dtype=torch.float32, output_loading_info=True,
        **loading_config(folder))
    model.eval()
    # Weights the model expected but the checkpoint did not give it (left at random init).
    missing = sorted(str(k) for k in info.get("missing_keys", []))
    quantized = [m for m in model.modules() if hasattr(m, "qweight")]
    kernels = sorted({type(m).__name__ for m in quantized})
    if kernels and kernels != [PINNED_KERNEL]:  # the pin did not hold: the numbers would differ
        raise RuntimeError(f"GPTQModel loaded kernels {kernels}, expected [{PINNED_KERNEL}]")
    # TorchLinear multiplies scale by code in the scales' dtype, fp16 as the checkpoint stores
    # them: every dequantized weight rounded to 11 bits (-0.04 % perplexity on Gemma 3 270M W4).
    # The format means scale * (q - zero) exactly, which sarqc computes in fp32; fp32 scales make
    # the loader compute it too, so a difference left is a difference in reading the format.
    for m in quantized:
        m.scales = m.scales.float()
    try:
        with torch.no_grad():
            logits = model(inputs).logits.double()
    except Exception as e:  # weights left uninitialised break the forward: name them
        if missing:
            raise RuntimeError(f"{type(e).__name__}: {e}; missing {missing[:4]}") from e
        raise
    logprobs = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    result = {"mean_nll": -logprobs.mean().item(), "target_logprobs": logprobs.tolist(),
              "kernels": kernels, "missing_keys": missing[:20]}
    if with_logits:
        result["logits"] = logits[0].float().tolist()
    return result


def main():
    jobs_file, output = sys.argv[1:]
    with open(jobs_file) as f:
        jobs = json.load(f)
    result = {}
    for job in jobs:
        inputs = torch.tensor(job["inputs"], dtype=torch.long)
        targets = torch.tensor(job["targets"], dtype=torch.long)
        try:
            result[job["folder"]] = score(job["folder"], inputs, targets, job.get("logits", True))
        except Exception as e:  # a refusal is a result: the test names it
            result[job["folder"]] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:500],
                                     "trace": traceback.format_exc()[-2000:]}
    with open(output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

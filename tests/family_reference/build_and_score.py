"""transformers as the reference forward of every model family sarqc reads: builds small
random-weight models with transformers itself (AutoConfig for the model type, the given
overrides), saves them as HuggingFace folders (fp32 safetensors) and scores token windows.

Usage: python build_and_score.py <jobs.json> <output.json>
jobs.json: [{"name", "model_type", "config": {overrides}, "folder", "seed", "inputs": [[ids]],
"targets": [[ids]]}, ...]. The weights are transformers' own initialisation with every norm
weight and bias perturbed (a norm left at 1 or a bias at 0 would hide a missing or misapplied
one). The output maps each name to {"target_logprobs" (per window), "mean_nll"} or {"error"}.
"""
import json
import os
import sys
import traceback
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402


def build(job):
    config = AutoConfig.for_model(job["model_type"], **job["config"])
    torch.manual_seed(job["seed"])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    model.eval()
    model.save_pretrained(job["folder"])
    return model


def score(model, inputs, targets):
    with torch.no_grad():
        logits = model(inputs).logits.double()
    logprobs = torch.log_softmax(logits, dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
    return {"target_logprobs": logprobs.tolist(), "mean_nll": -logprobs.mean().item()}


def main():
    jobs_file, output = sys.argv[1:]
    with open(jobs_file) as f:
        jobs = json.load(f)
    result = {}
    for job in jobs:
        try:
            model = build(job)
            result[job["name"]] = score(model, torch.tensor(job["inputs"], dtype=torch.long),
                                        torch.tensor(job["targets"], dtype=torch.long))
        except Exception as e:  # the test names the family and the reason
            result[job["name"]] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:500],
                                   "trace": traceback.format_exc()[-2000:]}
    with open(output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

"""lm-evaluation-harness as the reference of `sarqc eval --task`: its own task configurations
(piqa, arc_easy, hellaswag, winogrande as the package ships them, and a cloze task of the same
kind) read local JSONL files, and its transformers backend (HFLM) scores them zero-shot.

Usage: python score_tasks.py MODEL_DIR OUTPUT.json LAYOUT=FILE.jsonl [LAYOUT=FILE.jsonl ...]
LAYOUT: piqa | arc | hellaswag | winogrande | cloze. The output maps each FILE to
{"acc", "acc_norm" (when the task reports it), "loglikelihoods": per item, per choice}.
"""
import json
import os
import sys
import tempfile
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import lm_eval  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

TASKS = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
SHIPPED = {"piqa": "piqa/piqa.yaml", "arc": "arc/arc_easy.yaml",
           "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml"}
CLOZE = """task: {name}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files: {{train: {file}, validation: {file}, test: {file}}}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
# A shipped task, its dataset replaced by the local file for every split it names.
SHIPPED_ON_FILE = """include: {base}
task: {name}
tag: []
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files: {{train: {file}, validation: {file}, test: {file}}}
"""


def main():
    model_dir, output, *jobs = sys.argv[1:]
    folder = tempfile.mkdtemp()
    names = {}
    for i, job in enumerate(jobs):
        layout, file = job.split("=", 1)
        name = f"sarqc_{layout}_{i}"
        text = (CLOZE.format(name=name, file=json.dumps(file)) if layout == "cloze" else
                SHIPPED_ON_FILE.format(base=os.path.join(TASKS, SHIPPED[layout]), name=name,
                                       file=json.dumps(file)))
        with open(os.path.join(folder, name + ".yaml"), "w") as f:
            f.write(text)
        names[name] = file
    model = HFLM(pretrained=model_dir, device="cpu", dtype="float32", batch_size=1)
    results = lm_eval.simple_evaluate(model=model, tasks=list(names), num_fewshot=0,
                                      task_manager=TaskManager(include_path=folder),
                                      log_samples=True, bootstrap_iters=0)
    out = {}
    for name, file in names.items():
        metrics = results["results"][name]
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        out[file] = {"acc": metrics["acc,none"], "acc_norm": metrics.get("acc_norm,none"),
                     # resps: per choice, [(loglikelihood, is_greedy)]
                     "loglikelihoods": [[float(r[0][0]) for r in s["resps"]] for s in samples]}
    with open(output, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()

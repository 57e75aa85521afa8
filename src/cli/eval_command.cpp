#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "sarqc/eval/multiple_choice.h"
#include "sarqc/eval/perplexity.h"
#include "sarqc/util/error.h"

namespace sarqc::cli {

Command add_eval_command(CLI::App& app) {
  struct Flags {
    std::string model, data, reference, dtype = "fp32";
    std::vector<std::string> tasks;
    int64_t seqlen = 0, max_windows = 0, max_items = 0;
    bool json = false, per_item = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Perplexity on a text file ([BOS] + whole text tokenized once, non-overlapping "
              "windows) and KL divergence from a reference model; or zero-shot multiple-choice "
              "accuracy on task files (--task)");
  sub->add_option("--model", flags->model, "HuggingFace or sarqc-quantized model folder")
      ->required();
  sub->add_option("--data", flags->data, "Text file to evaluate perplexity on");
  sub->add_option("--task", flags->tasks,
                  "Multiple-choice task file (JSONL: PIQA, ARC, HellaSwag, WinoGrande or cloze "
                  "layout; repeatable): acc and acc_norm as lm-evaluation-harness scores them");
  sub->add_option("--max-items", flags->max_items, "--task: score only the first K items")
      ->check(positive_integer());
  sub->add_flag("--per-item", flags->per_item,
                "--task --json: also every item's per-choice log-likelihoods");
  sub->add_option("--seqlen", flags->seqlen,
                  "Window length in tokens (default: max_position_embeddings, at most 2048)")
      ->check(positive_integer());
  sub->add_option("--max-windows", flags->max_windows,
                  "Evaluate only the first K windows (default: all)")
      ->check(positive_integer());
  sub->add_option("--reference", flags->reference,
                  "Reference model folder (same vocabulary): also report KL divergence");
  sub->add_option("--dtype", flags->dtype, "Activation dtype: fp32, bf16, fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  sub->add_flag("--json", flags->json, "Print the result as one JSON record on stdout");
  return {sub, [flags](const GlobalOptions& global) {  // flags outlive parsing
            if (flags->data.empty() == flags->tasks.empty())
              throw_usage("give --data FILE (perplexity) or --task FILE (multiple choice)");
            if (!flags->tasks.empty()) {
              if (!flags->reference.empty())
                throw_usage("--reference applies to --data, not --task");
              ChoiceEvalOptions options;
              options.compute.device = apply_global_options(global);
              options.compute.dtype = parse_activation_dtype(flags->dtype);
              options.model_dir = flags->model;
              for (const auto& t : flags->tasks) options.task_files.emplace_back(t);
              options.max_items = flags->max_items;
              const auto results = evaluate_choice_tasks(options);
              if (flags->json)
                std::cout << to_json(results, flags->per_item).dump() << std::endl;
              else
                std::cout << to_text(results) << std::flush;
              return 0;
            }
            EvalOptions options;
            options.compute.device = apply_global_options(global);
            options.compute.dtype = parse_activation_dtype(flags->dtype);
            options.model_dir = flags->model;
            options.data_file = flags->data;
            options.reference_dir = flags->reference;
            options.seqlen = flags->seqlen;
            options.max_windows = flags->max_windows;
            const EvalResult result = evaluate(options);
            if (flags->json)
              std::cout << to_json(result).dump() << std::endl;
            else
              std::cout << to_text(result) << std::flush;
            return 0;
          }};
}

}  // namespace sarqc::cli

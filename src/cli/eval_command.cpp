#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "sarqc/eval/perplexity.h"

namespace sarqc::cli {

Command add_eval_command(CLI::App& app) {
  struct Flags {
    std::string model, data, reference, dtype = "fp32";
    int64_t seqlen = 0, max_windows = 0;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Perplexity on a text file ([BOS] + whole text tokenized once, non-overlapping "
              "windows), and KL divergence from a reference model");
  sub->add_option("--model", flags->model, "HuggingFace or sarqc-quantized model folder")
      ->required();
  sub->add_option("--data", flags->data, "Text file to evaluate on")->required();
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

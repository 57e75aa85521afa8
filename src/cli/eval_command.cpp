#include <memory>

#include "commands.h"
#include "sarqc/util/error.h"

namespace sarqc::cli {

Command add_eval_command(CLI::App& app) {
  struct Flags {
    std::string model, data, reference, dtype = "fp32";
    int64_t seqlen = 0, max_windows = 0;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Perplexity (and KL divergence from a reference model) on a text file "
              "[not implemented in this version]");
  sub->add_option("--model", flags->model, "HuggingFace or sarqc-quantized model folder")
      ->required();
  sub->add_option("--data", flags->data, "Text file to evaluate on")->required();
  sub->add_option("--seqlen", flags->seqlen, "Window length in tokens (default: model maximum)");
  sub->add_option("--max-windows", flags->max_windows, "Evaluate at most this many windows");
  sub->add_option("--reference", flags->reference, "Reference model folder for KL divergence");
  sub->add_option("--dtype", flags->dtype, "Activation dtype")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  sub->add_flag("--json", flags->json, "Print the result as one JSON record");
  return {sub, [flags](const GlobalOptions& global) -> int {  // flags outlive parsing
            apply_global_options(global);
            throw Error(ErrorKind::NotImplemented,
                        "sarqc eval is not implemented in this version (see README: status)");
          }};
}

}  // namespace sarqc::cli

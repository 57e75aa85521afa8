#include <iostream>
#include <memory>

#include "commands.h"
#include "sarqc/model/synthetic.h"

namespace sarqc::cli {

Command add_make_moe_command(CLI::App& app) {
  struct Flags {
    std::string model, out;
    MoeFromDenseOptions options;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "make-moe", "Build a small mixture-of-experts checkpoint from a dense model (perturbed "
                  "copies of each MLP as experts, fresh router): a test model for MoE code paths");
  sub->add_option("--model", flags->model, "Dense llama-architecture model folder")->required();
  sub->add_option("--out", flags->out, "Output folder (must not exist or be empty)")->required();
  sub->add_option("--layout", flags->options.model_type, "mixtral, qwen2_moe or qwen3_moe")
      ->check(CLI::IsMember({"mixtral", "qwen2_moe", "qwen3_moe"}))
      ->capture_default_str();
  sub->add_option("--experts", flags->options.experts, "Experts per layer")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--top-k", flags->options.top_k, "Experts per token")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--noise", flags->options.noise,
                  "Relative perturbation of each expert's weights")
      ->check(non_negative_number())
      ->capture_default_str();
  sub->add_option("--seed", flags->options.seed, "Random seed")
      ->check(seed_value())
      ->capture_default_str();
  sub->add_flag("--fused", flags->options.fused,
                "Store experts fused, as transformers >= 5 saves them");
  return {sub, [flags](const GlobalOptions& global) {
            apply_global_options(global);
            moe_from_dense(flags->model, flags->out, flags->options);
            std::cout << flags->out << std::endl;
            return 0;
          }};
}

}  // namespace sarqc::cli

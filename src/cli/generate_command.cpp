#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "sarqc/eval/generate.h"
#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"

namespace sarqc::cli {

Command add_generate_command(CLI::App& app) {
  struct Flags {
    std::string model, prompt, dtype = "fp32";
    int64_t tokens = 60;
    bool ignore_eos = false, json = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "generate", "Greedy continuation of a prompt (a quick look at a model's quality)");
  sub->add_option("--model", flags->model, "HuggingFace or sarqc-quantized model folder")
      ->required();
  sub->add_option("--prompt", flags->prompt, "Text to continue (BOS is added as the tokenizer "
                                             "config asks)")
      ->required();
  sub->add_option("--tokens", flags->tokens, "Number of new tokens")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating after end-of-sequence");
  sub->add_option("--dtype", flags->dtype, "Activation dtype: fp32, bf16, fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  sub->add_flag("--json", flags->json, "Print the prompt and generated ids and text as JSON");
  return {sub, [flags](const GlobalOptions& global) {
            ComputeOptions compute;
            compute.device = apply_global_options(global);
            compute.dtype = parse_activation_dtype(flags->dtype);
            const ModelWeights weights = ModelWeights::open(flags->model);
            const auto tokenizer = load_tokenizer(flags->model);
            StreamingModel model(weights, compute);
            model.keep_layers_resident();
            // The prompt continues: what the template puts after a sequence is left out.
            std::vector<int32_t> ids = tokenizer->special().prefix;
            const auto body = tokenizer->encode(flags->prompt);
            ids.insert(ids.end(), body.begin(), body.end());
            std::optional<int32_t> stop;
            if (!flags->ignore_eos) stop = tokenizer->special().eos_id;
            const auto generated = generate_greedy(model, ids, flags->tokens, stop);
            std::vector<int32_t> all = ids;
            all.insert(all.end(), generated.begin(), generated.end());
            const std::string text = tokenizer->decode(all);
            if (flags->json) {
              nlohmann::json j = {{"prompt_ids", ids},
                                  {"generated_ids", generated},
                                  {"text", text}};
              std::cout << j.dump() << std::endl;
            } else {
              std::cout << text << std::endl;
            }
            return 0;
          }};
}

}  // namespace sarqc::cli

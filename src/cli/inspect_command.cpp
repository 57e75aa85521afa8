#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "sarqc/pipeline/inspect.h"

namespace sarqc::cli {

Command add_inspect_command(CLI::App& app) {
  struct Flags {
    std::string model;
    bool json = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "inspect", "Validate a model folder and summarize it: architecture, parameters, dtypes, "
                 "per-layer modules, memory needed, tokenizer");
  sub->add_option("--model", flags->model, "HuggingFace model folder")->required();
  sub->add_flag("--json", flags->json, "Print one JSON document (schema in README.md)");
  return {sub, [flags](const GlobalOptions& global) {
            apply_global_options(global);
            InspectOptions options;
            options.model_dir = flags->model;
            const ModelSummary summary = inspect_model(options);
            if (flags->json)
              std::cout << to_json(summary).dump(2) << std::endl;
            else
              std::cout << to_text(summary) << std::flush;
            return 0;
          }};
}

}  // namespace sarqc::cli

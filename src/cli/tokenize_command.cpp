#include <iostream>
#include <memory>

#include "commands.h"
#include "sarqc/pipeline/tokenize.h"

namespace sarqc::cli {

Command add_tokenize_command(CLI::App& app) {
  struct Flags {
    std::string model, file;
    bool json = false, special = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub =
      app.add_subcommand("tokenize",
                         "Print the token ids of a whole text file with the model's tokenizer "
                         "(tokenizer.json, else tokenizer.model), as calibration and eval use it");
  sub->add_option("--model", flags->model,
                  "Model folder (a folder holding only the tokenizer files is enough)")
      ->required();
  sub->add_option("file", flags->file, "Text file to tokenize ('-': standard input)")->required();
  sub->add_flag("--special", flags->special,
                "Add the special tokens the tokenizer puts around a sequence (e.g. BOS)");
  sub->add_flag("--json", flags->json, "Print one JSON record: tokenizer, bytes, count, ids");
  return {sub, [flags](const GlobalOptions& global) {
            apply_global_options(global);
            TokenizeOptions options;
            options.model_dir = flags->model;
            options.input = flags->file;
            options.add_special = flags->special;
            const TokenizeResult result = tokenize_file(options);
            if (flags->json)
              std::cout << to_json(result).dump() << std::endl;
            else
              std::cout << to_text(result) << std::flush;
            return 0;
          }};
}

}  // namespace sarqc::cli

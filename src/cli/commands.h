#pragma once
// One function pair per subcommand: add its flags, then run it after parsing.
#include <CLI/CLI.hpp>

#include "common.h"

namespace sarqc::cli {

struct Command {
  CLI::App* app = nullptr;
  // Returns the process exit code; throws sarqc::Error for failures.
  std::function<int(const GlobalOptions&)> run;
};

Command add_inspect_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_quantize_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_make_moe_command(CLI::App& app);
Command add_tokenize_command(CLI::App& app);

}  // namespace sarqc::cli

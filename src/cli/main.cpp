// sarqc command line: parses flags into option structs and calls the library; nothing else.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.h"
#include "common.h"
#include "sarqc/util/cpu_environment.h"
#include "sarqc/util/error.h"
#include "sarqc/util/interrupt.h"
#include "sarqc/version.h"

namespace {

int fail(int code, const std::string& message) {
  // One line on stderr, whatever the log level: scripts show it to the user. A rank of a
  // distributed run says which.
  const auto newline = message.find('\n');
  const char* rank = std::getenv("RANK");
  const std::string who = rank != nullptr && *rank != '\0' ? std::string("rank ") + rank + ": " : "";
  std::fprintf(stderr, "sarqc: error: %s%s\n", who.c_str(), message.substr(0, newline).c_str());
  return code;
}

// For the subcommands that compute on the CPU: see restart_with_cpu_environment.
void tune_cpu_environment(int argc, char** argv) {
  bool computes = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.find("cuda") != std::string::npos || arg == "--help" || arg == "-h") return;
    computes |= arg == "eval" || arg == "quantize" || arg == "generate";
  }
  if (computes) sarqc::restart_with_cpu_environment(argv);
}

std::vector<std::string> subcommand_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    names.push_back(sub->get_name());
  return names;
}

// The first word that is neither a flag nor a global flag's value, when no subcommand took it
// ("sarqc quantze ..."): CLI11 would only say that a subcommand is required.
std::string unknown_subcommand(const CLI::App& app, int argc, char** argv) {
  const std::vector<std::string> names = subcommand_names(app);
  for (int i = 1; i < argc; ++i)  // a subcommand after a misplaced word: CLI11's message fits
    if (std::find(names.begin(), names.end(), argv[i]) != names.end()) return "";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--log-level" || arg == "--threads" || arg == "--device") {
      ++i;  // its value
      continue;
    }
    if (arg.empty() || arg[0] == '-') continue;
    return std::find(names.begin(), names.end(), arg) == names.end() ? arg : "";
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sarqc;
  tune_cpu_environment(argc, argv);
  CLI::App app{"sarqc: post-training quantization of Llama-family language models", "sarqc"};
  app.set_version_flag("--version", std::string("sarqc ") + kVersion);
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the subcommand
  cli::GlobalOptions global;
  global.argv = argv;  // for `quantize --nproc`, which starts ranks with the same arguments
  cli::add_global_options(app, global);
  const std::vector<cli::Command> commands = {
      cli::add_quantize_command(app), cli::add_eval_command(app),
      cli::add_generate_command(app), cli::add_inspect_command(app),
      cli::add_make_moe_command(app), cli::add_tokenize_command(app)};

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    if (const std::string word = unknown_subcommand(app, argc, argv); !word.empty())
      return fail(kExitUsage, fmt::format("'{}' is not a subcommand: expected one of {}", word,
                                          fmt::join(subcommand_names(app), ", ")));
    return fail(kExitUsage, std::string(e.what()) + " (see --help)");
  }
  try {
    for (const auto& command : commands)
      if (command.app->parsed()) return command.run(global);
    return fail(kExitUsage, "no subcommand given (try --help)");
  } catch (const Interrupted& e) {
    return fail(e.exit_code(), e.what());
  } catch (const Error& e) {
    return fail(exit_code_for(e.kind()), e.what());
  } catch (const c10::Error& e) {
    return fail(kExitRuntime, e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return fail(kExitRuntime, "out of memory");
  } catch (const std::exception& e) {
    return fail(kExitRuntime, e.what());
  }
}

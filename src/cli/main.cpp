// sarqc command line: parses flags into option structs and calls the library; nothing else.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <c10/util/Exception.h>

#include "commands.h"
#include "common.h"
#include "sarqc/dist/local_ranks.h"
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

// `quantize --nproc N` (N > 1) outside a launched rank: start N ranks of this same command.
int nproc_requested(int argc, char** argv) {
  if (sarqc::launched_as_rank()) return 0;
  bool quantize = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    quantize |= arg == "quantize";
    std::string value;
    if (arg == "--nproc" && i + 1 < argc) value = argv[i + 1];
    if (arg.rfind("--nproc=", 0) == 0) value = arg.substr(8);
    if (!quantize || value.empty() || value.find_first_not_of("0123456789") != std::string::npos)
      continue;
    return std::stoi(value.substr(0, 6));
  }
  return 0;
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

}  // namespace

int main(int argc, char** argv) {
  using namespace sarqc;
  tune_cpu_environment(argc, argv);
  if (const int nproc = nproc_requested(argc, argv); nproc > 1) {
    try {
      return run_local_ranks(nproc, argv);
    } catch (const Error& e) {
      return fail(exit_code_for(e.kind()), e.what());
    }
  }
  CLI::App app{"sarqc: post-training quantization of Llama-family language models", "sarqc"};
  app.set_version_flag("--version", std::string("sarqc ") + kVersion);
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the subcommand
  cli::GlobalOptions global;
  cli::add_global_options(app, global);
  const std::vector<cli::Command> commands = {
      cli::add_quantize_command(app), cli::add_eval_command(app),
      cli::add_generate_command(app), cli::add_inspect_command(app),
      cli::add_make_moe_command(app), cli::add_tokenize_command(app)};

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
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

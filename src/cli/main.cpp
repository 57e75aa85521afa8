// sarqc command line: parses flags into option structs and calls the library; nothing else.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <c10/util/Exception.h>

#include "commands.h"
#include "common.h"
#include "sarqc/util/error.h"
#include "sarqc/util/interrupt.h"
#include "sarqc/version.h"

namespace {

int fail(int code, const std::string& message) {
  // One line on stderr, whatever the log level: scripts show it to the user.
  const auto newline = message.find('\n');
  std::fprintf(stderr, "sarqc: error: %s\n", message.substr(0, newline).c_str());
  return code;
}

// OpenBLAS and libgomp read their thread settings when they are loaded, before main. With their
// defaults, idle threads of one pool spin on the cores the other pool needs: on 2 cores a CPU
// forward ran 40% faster with the settings below (BENCHMARKS.md). So, unless the user set them
// (or SARQC_NO_REEXEC), set them and restart this process once, for the subcommands that compute
// on the CPU: the restart costs about 0.5 s of library loading.
void tune_cpu_threading(int argc, char** argv) {
  if (std::getenv("SARQC_NO_REEXEC") != nullptr) return;
  bool computes = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.find("cuda") != std::string::npos || arg == "--help" || arg == "-h") return;
    computes |= arg == "eval" || arg == "quantize" || arg == "generate";
  }
  if (!computes) return;
  bool changed = false;
  for (const auto& [name, value] : {std::pair{"OMP_WAIT_POLICY", "PASSIVE"},
                                    std::pair{"OPENBLAS_THREAD_TIMEOUT", "4"}})
    if (std::getenv(name) == nullptr) changed |= ::setenv(name, value, 1) == 0;
  if (!changed) return;
  ::setenv("SARQC_NO_REEXEC", "1", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run with the defaults
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sarqc;
  tune_cpu_threading(argc, argv);
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

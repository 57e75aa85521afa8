// sarqc command line: parses flags into option structs and calls the library; nothing else.
#include <cstdio>
#include <vector>

#include <c10/util/Exception.h>

#include "commands.h"
#include "common.h"
#include "sarqc/util/error.h"
#include "sarqc/version.h"

namespace {

int fail(int code, const std::string& message) {
  // One line on stderr, whatever the log level: scripts show it to the user.
  const auto newline = message.find('\n');
  std::fprintf(stderr, "sarqc: error: %s\n", message.substr(0, newline).c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sarqc;
  CLI::App app{"sarqc: post-training quantization of Llama-family language models", "sarqc"};
  app.set_version_flag("--version", std::string("sarqc ") + kVersion);
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the subcommand
  cli::GlobalOptions global;
  cli::add_global_options(app, global);
  const std::vector<cli::Command> commands = {
      cli::add_quantize_command(app), cli::add_eval_command(app),
      cli::add_generate_command(app), cli::add_inspect_command(app),
      cli::add_make_moe_command(app)};

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

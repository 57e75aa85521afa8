#pragma once
// Shared by the subcommands: global flags and how they are applied.
#include <string>

#include <CLI/CLI.hpp>
#include <c10/core/Device.h>

namespace sarqc::cli {

struct GlobalOptions {
  std::string log_level = "info";
  int threads = 0;  // 0: one per core
  std::string device = "cpu";
  char** argv = nullptr;  // the process's arguments (a launcher restarts itself with them)
};

// Registers --log-level, --threads, --device on the top-level app.
void add_global_options(CLI::App& app, GlobalOptions& options);

// Validators with short messages (CLI11's PositiveNumber prints its whole double range).
CLI::Validator positive_integer();
CLI::Validator non_negative_number();
CLI::Validator seed_value();  // 0 .. 2^64 - 1, no sign

// Applies --log-level and checks --threads without starting ATen's threads (usage errors name
// the flag): what a launcher needs, which must stay single-threaded for its signal handling.
void apply_logging_and_check_threads(const GlobalOptions& options);

// Applies logging and threads, then parses the device (usage error when unavailable).
c10::Device apply_global_options(const GlobalOptions& options);

}  // namespace sarqc::cli

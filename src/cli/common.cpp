#include "common.h"

#include <spdlog/spdlog.h>

#include "sarqc/util/device.h"
#include "sarqc/util/log.h"

namespace sarqc::cli {

void add_global_options(CLI::App& app, GlobalOptions& options) {
  app.add_option("--log-level", options.log_level,
                 "Log verbosity on stderr: trace, debug, info, warn, error, off")
      ->capture_default_str();
  app.add_option("--threads", options.threads, "CPU threads for tensor math (0: one per core)")
      ->capture_default_str()
      ->check(non_negative_number());
  app.add_option("--device", options.device, "Compute device: cpu, cuda or cuda:N")
      ->capture_default_str();
}

CLI::Validator positive_integer() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const long long value = std::stoll(text, &used);
          if (used == text.size() && value > 0) return {};
        } catch (const std::exception&) {
        }
        return "expected a positive integer, got '" + text + "'";
      },
      "INT>0");
}

CLI::Validator seed_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        // std::stoull accepts "-1" (as 2^64 - 1): digits only.
        if (!text.empty() && text.size() <= 20 &&
            text.find_first_not_of("0123456789") == std::string::npos) {
          try {
            std::stoull(text);
            return {};
          } catch (const std::exception&) {
          }
        }
        return "expected an integer in [0, 2^64), got '" + text + "'";
      },
      "UINT64");
}

CLI::Validator non_negative_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          size_t used = 0;
          const double value = std::stod(text, &used);
          if (used == text.size() && value >= 0) return {};
        } catch (const std::exception&) {
        }
        return "expected a number >= 0, got '" + text + "'";
      },
      "NUM>=0");
}

void apply_logging_and_check_threads(const GlobalOptions& options) {
  init_logging(options.log_level);
  checked_thread_count(options.threads);
}

c10::Device apply_global_options(const GlobalOptions& options) {
  init_logging(options.log_level);
  const int threads = configure_threads(options.threads);
  const c10::Device device = parse_device(options.device);
  spdlog::debug("using {} thread(s), device {}", threads, device.str());
  return device;
}

}  // namespace sarqc::cli

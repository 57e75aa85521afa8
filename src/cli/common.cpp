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
      ->check(CLI::NonNegativeNumber);
  app.add_option("--device", options.device, "Compute device: cpu, cuda or cuda:N")
      ->capture_default_str();
}

c10::Device apply_global_options(const GlobalOptions& options) {
  init_logging(options.log_level);
  const int threads = configure_threads(options.threads);
  const c10::Device device = parse_device(options.device);
  spdlog::debug("using {} thread(s), device {}", threads, device.str());
  return device;
}

}  // namespace sarqc::cli

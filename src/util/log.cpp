#include "sarqc/util/log.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "sarqc/util/error.h"

namespace sarqc {

void init_logging(const std::string& level) {
  const auto parsed = spdlog::level::from_str(level);
  // from_str maps unknown names to "off"; only accept "off" when asked for it.
  if (parsed == spdlog::level::off && level != "off")
    throw_usage(fmt::format("--log-level '{}': expected trace, debug, info, warn, error or off",
                            level));
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("sarqc", sink);
  // A rank other than 0 of a distributed run (RANK set by torchrun, srun or --nproc) logs only
  // warnings and errors, prefixed with its rank; rank 0 speaks for the run.
  const char* rank = std::getenv("RANK");
  const bool other_rank = rank != nullptr && *rank != '\0' && std::string(rank) != "0";
  const std::string prefix = other_rank ? fmt::format("[rank {}] ", rank) : "";
  logger->set_pattern(prefix + (isatty(STDERR_FILENO) ? "%^%l%$: %v"
                                                      : "[%Y-%m-%d %H:%M:%S.%e] %l: %v"));
  logger->set_level(other_rank ? std::max(parsed, spdlog::level::warn) : parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace sarqc

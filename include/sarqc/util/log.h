#pragma once
#include <string>

namespace sarqc {

// All logs go to stderr so that stdout carries only machine-readable output (--json).
// level: trace, debug, info, warn, error, off. Throws a usage error for anything else.
void init_logging(const std::string& level);

}  // namespace sarqc

#include "sarqc/util/fault_point.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace sarqc {
namespace {

struct FaultPlan {
  std::string name;  // empty: no fault planned
  long hit = 1;
};

const FaultPlan& plan() {
  static const FaultPlan p = [] {
    FaultPlan f;
    const char* env = std::getenv("SARQC_FAULT");
    if (env == nullptr || *env == '\0') return f;
    f.name = env;
    const auto colon = f.name.find(':');
    if (colon != std::string::npos) {
      f.hit = std::max(1L, std::strtol(f.name.c_str() + colon + 1, nullptr, 10));
      f.name.resize(colon);
    }
    return f;
  }();
  return p;
}

std::atomic<long> hits{0};

}  // namespace

void fault_point(const char* name) {
  const FaultPlan& p = plan();
  if (p.name.empty() || p.name != name) return;
  if (hits.fetch_add(1) + 1 < p.hit) return;
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);  // not reached
}

}  // namespace sarqc

#pragma once
// SIGINT and SIGTERM during long work (cluster schedulers send SIGTERM before they preempt):
// while an InterruptGuard lives, the first signal only asks the work to stop at its next check
// point, where throw_if_interrupted() raises Interrupted; the caller's destructors then remove
// what was half-written, and the CLI exits with 128 + the signal number. A second signal ends
// the process at once (its leftovers are cleaned up by the next run; see AtomicDirectory).
#include <string>

#include "sarqc/util/error.h"

namespace sarqc {

class Interrupted : public Error {
 public:
  Interrupted(int signal, const std::string& message)
      : Error(ErrorKind::Runtime, message), signal_(signal) {}
  int signal() const { return signal_; }
  int exit_code() const { return 128 + signal_; }

 private:
  int signal_;
};

class InterruptGuard {
 public:
  InterruptGuard();  // installs the handlers (nested guards share them)
  ~InterruptGuard();  // restores the previous ones
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};

// Throws Interrupted ("interrupted by SIGTERM") once a signal arrived under a guard. A relaxed
// atomic load: cheap enough for any loop, and no device synchronisation.
void throw_if_interrupted();

// "SIGINT", "SIGTERM", or "signal N".
std::string signal_name(int signal);

}  // namespace sarqc

#include "sarqc/util/interrupt.h"

#include <signal.h>

#include <atomic>
#include <fmt/format.h>

namespace sarqc {
namespace {

std::atomic<int> pending_signal{0};
std::atomic<int> guards{0};
struct sigaction previous_int, previous_term;

extern "C" void on_signal(int signal) {
  int expected = 0;
  if (!pending_signal.compare_exchange_strong(expected, signal)) {
    // The second signal: stop now, as without a guard.
    ::signal(signal, SIG_DFL);
    ::raise(signal);
  }
}

}  // namespace

InterruptGuard::InterruptGuard() {
  if (guards.fetch_add(1) > 0) return;
  pending_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  ::sigaction(SIGINT, &action, &previous_int);
  ::sigaction(SIGTERM, &action, &previous_term);
}

InterruptGuard::~InterruptGuard() {
  if (guards.fetch_sub(1) > 1) return;
  ::sigaction(SIGINT, &previous_int, nullptr);
  ::sigaction(SIGTERM, &previous_term, nullptr);
  pending_signal = 0;
}

void throw_if_interrupted() {
  const int signal = pending_signal.load(std::memory_order_relaxed);
  if (signal != 0) throw Interrupted(signal, "interrupted by " + signal_name(signal));
}

std::string signal_name(int signal) {
  if (signal == SIGINT) return "SIGINT";
  if (signal == SIGTERM) return "SIGTERM";
  return fmt::format("signal {}", signal);
}

}  // namespace sarqc

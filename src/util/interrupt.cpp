#include "sarqc/util/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include <atomic>
#include <fmt/format.h>

namespace sarqc {
namespace {

std::atomic<int> pending_signal{0};
std::atomic<int> guards{0};
struct sigaction previous_int, previous_term;
pid_t launcher_pid = 0;  // the --nproc launcher that started this rank (SARQC_LAUNCHER_PID)

extern "C" void on_signal(int signal, siginfo_t* info, void*) {
  int expected = 0;
  if (pending_signal.compare_exchange_strong(expected, signal)) return;
  // The launcher's copy of a signal this rank already got: a terminal's Ctrl-C or a
  // scheduler's job-wide SIGTERM reaches every rank and the launcher, which passes it on. Not
  // a second request (the launcher answers a real second one with SIGKILL).
  if (launcher_pid > 0 && info != nullptr && info->si_pid == launcher_pid) return;
  // The second signal: stop now, as without a guard.
  ::signal(signal, SIG_DFL);
  ::raise(signal);
}

}  // namespace

InterruptGuard::InterruptGuard() {
  if (guards.fetch_add(1) > 0) return;
  pending_signal = 0;
  const char* launcher = std::getenv("SARQC_LAUNCHER_PID");
  launcher_pid = launcher != nullptr ? static_cast<pid_t>(std::atol(launcher)) : 0;
  struct sigaction action {};
  action.sa_sigaction = on_signal;
  action.sa_flags = SA_SIGINFO;
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

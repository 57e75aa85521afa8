#include "sarqc/dist/local_ranks.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "sarqc/util/device.h"
#include "sarqc/util/error.h"

extern char** environ;

namespace sarqc {
namespace {

int exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

const char* const kLaunchVariables[] = {"RANK",        "LOCAL_RANK",  "WORLD_SIZE",
                                        "MASTER_ADDR", "MASTER_PORT", "SARQC_LAUNCHER_PID"};

// Rank `rank`'s environment: this process's, with the launch variables replaced. Built before
// fork: a child of a multi-threaded process may only make async-signal-safe calls, and
// setenv allocates.
std::vector<std::string> rank_environment(int rank, int nproc, const std::string& port) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    bool launch = false;
    for (const char* name : kLaunchVariables) {
      const size_t n = std::strlen(name);
      launch |= std::strncmp(*e, name, n) == 0 && (*e)[n] == '=';
    }
    if (!launch) env.emplace_back(*e);
  }
  env.push_back(fmt::format("RANK={}", rank));
  env.push_back(fmt::format("LOCAL_RANK={}", rank));
  env.push_back(fmt::format("WORLD_SIZE={}", nproc));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back("MASTER_PORT=" + port);
  // Lets the rank tell the launcher's copy of a signal from a second signal (util/interrupt).
  env.push_back(fmt::format("SARQC_LAUNCHER_PID={}", ::getpid()));
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> p;
  for (std::string& s : strings) p.push_back(s.data());
  p.push_back(nullptr);
  return p;
}

// The signals the launcher passes on to its ranks. A `kill` of the launcher reaches only it; a
// terminal's Ctrl-C or a scheduler's job-wide SIGTERM reaches the ranks too, and each rank then
// ignores the launcher's copy (util/interrupt).
sigset_t forwarded_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (const int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  return set;
}

void signal_all(const std::vector<pid_t>& ranks, int signal) {
  for (const pid_t p : ranks)
    if (p > 0) ::kill(p, signal);
}

// What the ranks get for a signal the launcher received: the first is passed on (SIGHUP, which
// the ranks do not handle, as SIGTERM) and makes each save and stop at its next check point;
// another one ends them at once.
int signal_for_ranks(int received, bool first) {
  if (!first) return SIGKILL;
  return received == SIGHUP ? SIGTERM : received;
}

}  // namespace

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw_runtime("--nproc: cannot open a socket to find a free port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t length = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0;
  ::close(fd);
  if (!ok) throw_runtime("--nproc: cannot find a free port on 127.0.0.1");
  return ntohs(addr.sin_port);
}

bool launched_as_rank() {
  const char* rank = std::getenv("RANK");
  return rank != nullptr && *rank != '\0';
}

int max_local_ranks() { return 4 * usable_cores(); }

int run_local_ranks(int nproc, char** argv, std::chrono::seconds grace) {
  const int limit = max_local_ranks();
  if (nproc < 1 || nproc > limit)
    throw_usage(fmt::format("--nproc {}: expected 1 to {} (at most 4 ranks per usable core; "
                            "this process may use {})",
                            nproc, limit, usable_cores()));
  const std::string port = std::to_string(free_loopback_port());
  std::vector<std::vector<std::string>> environments;
  for (int r = 0; r < nproc; ++r) environments.push_back(rank_environment(r, nproc, port));
  std::vector<std::vector<char*>> envp;
  for (auto& e : environments) envp.push_back(pointers(e));

  // The forwarded signals stay blocked in the launcher and are taken with sigtimedwait, so one
  // that arrives while ranks are starting is passed on to every rank started.
  const sigset_t forwarded = forwarded_signals();
  sigset_t previous;
  ::pthread_sigmask(SIG_BLOCK, &forwarded, &previous);
  // waitpid must see the ranks' exit codes, also when our parent left SIGCHLD ignored (an
  // ignored SIGCHLD is inherited across exec and makes the kernel reap children itself).
  ::signal(SIGCHLD, SIG_DFL);
  const pid_t launcher = ::getpid();
  std::vector<pid_t> ranks;
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      // A rank dies with its launcher (kill -9 of the launcher: SIGTERM makes it save its
      // state and stop), also when the launcher died before this line.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(128 + SIGTERM);
      ::sigprocmask(SIG_SETMASK, &previous, nullptr);  // async-signal-safe, unlike pthread's
      ::execve("/proc/self/exe", argv, envp[r].data());
      ::_exit(127);
    }
    if (pid < 0) {
      const int error = errno;
      signal_all(ranks, SIGKILL);  // they have not met yet: nothing of theirs to save
      for (const pid_t p : ranks) ::waitpid(p, nullptr, 0);
      ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
      throw_runtime(fmt::format("--nproc {}: could not start rank {}: {}", nproc, r,
                                std::strerror(error)));
    }
    ranks.push_back(pid);
  }

  int first_failure = 0, signals_received = 0;
  std::vector<int> codes(ranks.size(), 0);
  std::vector<bool> signalled(ranks.size(), false);  // each rank gets SIGTERM at most once
  size_t running = ranks.size();
  std::chrono::steady_clock::time_point kill_at = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      const int code = exit_code(status);
      for (size_t r = 0; r < ranks.size(); ++r)
        if (ranks[r] == pid) ranks[r] = 0, codes[r] = code, --running;
      if (code != 0 && first_failure == 0) {  // no rank waits for a dead one
        first_failure = code;
        for (size_t r = 0; r < ranks.size(); ++r)
          if (ranks[r] > 0 && !signalled[r]) ::kill(ranks[r], SIGTERM), signalled[r] = true;
        kill_at = std::min(kill_at, std::chrono::steady_clock::now() + grace);
      }
      continue;
    }
    if (pid < 0 && errno == ECHILD) {  // the ranks are gone without our seeing their codes
      if (first_failure == 0) first_failure = kExitRuntime;
      break;
    }
    if (std::chrono::steady_clock::now() >= kill_at) signal_all(ranks, SIGKILL);
    const timespec poll{0, 50'000'000};
    const int signal = ::sigtimedwait(&forwarded, nullptr, &poll);
    if (signal > 0) {
      const int send = signal_for_ranks(signal, signals_received++ == 0);
      for (size_t r = 0; r < ranks.size(); ++r)
        if (ranks[r] > 0) ::kill(ranks[r], send), signalled[r] = true;
    }
  }
  // A signal that came after the last rank ended must not kill the launcher when unblocked.
  const timespec now{0, 0};
  while (::sigtimedwait(&forwarded, nullptr, &now) > 0) {
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  // A refusal (usage, bad input, not implemented, state conflict: 2-5) is the cause when there
  // is one: rank 0 refusing a saved state makes the others fail with 1 ("rank 0 stopped"),
  // possibly sooner. Otherwise the first failure in time (a crash, then its consequences).
  for (const int code : codes)
    if (code >= 2 && code <= 5) return code;
  return first_failure;
}

}  // namespace sarqc

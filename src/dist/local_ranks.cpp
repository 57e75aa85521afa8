#include "sarqc/dist/local_ranks.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "sarqc/util/error.h"

namespace sarqc {
namespace {

// A TCP port free on the loopback right now (the kernel's choice for port 0).
int free_port() {
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

int exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

bool launched_as_rank() {
  const char* rank = std::getenv("RANK");
  return rank != nullptr && *rank != '\0';
}

int run_local_ranks(int nproc, char** argv, std::chrono::seconds grace) {
  if (nproc < 1) throw_usage(fmt::format("--nproc {}: expected at least 1", nproc));
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> ranks;
  for (int r = 0; r < nproc; ++r) {
    const std::string rank = std::to_string(r), world = std::to_string(nproc);
    const pid_t pid = ::fork();
    if (pid < 0) throw_runtime("--nproc: fork failed");
    if (pid == 0) {
      ::setenv("RANK", rank.c_str(), 1);
      ::setenv("LOCAL_RANK", rank.c_str(), 1);
      ::setenv("WORLD_SIZE", world.c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::execv("/proc/self/exe", argv);
      ::_exit(127);
    }
    ranks.push_back(pid);
  }
  int first_failure = 0;
  size_t running = ranks.size();
  std::chrono::steady_clock::time_point kill_at{};
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, kill_at == decltype(kill_at){} ? 0 : WNOHANG);
    if (pid > 0) {
      for (auto& p : ranks)
        if (p == pid) p = 0, --running;
      const int code = exit_code(status);
      if (code != 0 && first_failure == 0) {
        first_failure = code;
        for (const pid_t p : ranks)
          if (p > 0) ::kill(p, SIGTERM);
        kill_at = std::chrono::steady_clock::now() + grace;
      }
      continue;
    }
    if (pid < 0) break;  // no children left
    if (std::chrono::steady_clock::now() >= kill_at)
      for (const pid_t p : ranks)
        if (p > 0) ::kill(p, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return first_failure;
}

}  // namespace sarqc

#pragma once
// Runs the real `sarqc` binary for the CLI tests: exit code, stdout and stderr.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "python_reference.h"
#include "test_support.h"

namespace sarqc::test {

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// `env`: "NAME=value" settings for this process only (e.g. SARQC_FAULT).
inline RunResult run_sarqc(const std::vector<std::string>& args,
                           const std::vector<std::string>& env = {}) {
  TempDir dir;
  std::string command;
  for (const auto& e : env) command += shell_quote(e) + " ";
  command = (env.empty() ? "" : "env " + command) + shell_quote(SARQC_BINARY);
  for (const auto& a : args) command += " " + shell_quote(a);
  command += " >" + shell_quote((dir / "out").string()) + " 2>" +
             shell_quote((dir / "err").string()) +
             " </dev/null";
  const int status = std::system(command.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_bytes(dir / "out");
  r.err = read_bytes(dir / "err");
  return r;
}

// Starts sarqc in the background, stdout and stderr into the given files; with
// `own_process_group` it leads a process group of its own (signal it all with kill(-pid, s), as
// a terminal or a scheduler does).
inline pid_t spawn_sarqc(const std::vector<std::string>& args, const std::string& out_path,
                         const std::string& err_path, bool own_process_group = false) {
  std::vector<std::string> storage = {SARQC_BINARY};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    if (own_process_group) ::setpgid(0, 0);
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    ::execv(SARQC_BINARY, argv.data());
    ::_exit(127);
  }
  return pid;
}

// Waits for a spawned process; its exit code, or 128 + the signal that ended it.
inline int wait_exit_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits until a run's work folder (".*.sarqc-work" or ".*.partial-*") appears in `watch`;
// false when none did within 120 s.
inline bool wait_for_work_folder(const std::filesystem::path& watch) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(watch, ec))
      if (e.path().filename().string().find(".partial-") != std::string::npos ||
          e.path().filename().string().find(".sarqc-work") != std::string::npos)
        return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Starts sarqc, waits until its work folder appears in `watch` (wait_for_work_folder), then
// sends `signal` and waits for the process to end. exit_code is -2 when the folder never
// appeared within 120 s (the process is killed then).
inline RunResult run_sarqc_and_signal(const std::vector<std::string>& args,
                                      const std::filesystem::path& watch, int signal) {
  TempDir dir;
  const std::string out_path = (dir / "out").string(), err_path = (dir / "err").string();
  const pid_t pid = spawn_sarqc(args, out_path, err_path);
  RunResult r;
  const bool seen = wait_for_work_folder(watch);
  ::kill(pid, seen ? signal : SIGKILL);
  const int code = wait_exit_code(pid);
  r.exit_code = seen ? code : -2;
  r.out = read_bytes(out_path);
  r.err = read_bytes(err_path);
  return r;
}

inline size_t count_lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

}  // namespace sarqc::test

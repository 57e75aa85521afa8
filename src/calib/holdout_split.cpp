#include "sarqc/calib/holdout_split.h"

#include <ATen/ATen.h>

#include <random>

namespace sarqc {

HoldoutSplit::HoldoutSplit(int64_t windows, int64_t seqlen, uint64_t seed)
    : windows_(windows), seqlen_(seqlen) {
  TORCH_CHECK(windows >= 1 && seqlen >= 1, "HoldoutSplit: needs windows and tokens, got ", windows,
              " × ", seqlen);
  per_window_ = std::min(seqlen, (kMinPieces + windows - 1) / windows);
  piece_length_ = (seqlen + per_window_ - 1) / per_window_;
  per_window_ = (seqlen + piece_length_ - 1) / piece_length_;  // no empty last piece
  const int64_t n = windows * per_window_;
  // Fisher–Yates with the engine's raw output: std::shuffle and the
  // distributions differ between standard libraries, mt19937_64 does not.
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(seed ^ 0x5a5c4f1d2e3b7a69ULL);
  for (int64_t i = n - 1; i > 0; --i)
    std::swap(order[static_cast<size_t>(i)],
              order[static_cast<size_t>(rng() % static_cast<uint64_t>(i + 1))]);
  fold_.assign(static_cast<size_t>(n), 1);
  for (int64_t i = 0; i < n / 2; ++i) fold_[static_cast<size_t>(order[static_cast<size_t>(i)])] = 0;
}

int HoldoutSplit::fold(int64_t window, int64_t piece) const {
  TORCH_CHECK(window >= 0 && window < windows_ && piece >= 0 && piece < per_window_,
              "HoldoutSplit::fold: piece ", piece, " of window ", window, " is outside ", windows_,
              " × ", per_window_);
  return fold_[static_cast<size_t>(window * per_window_ + piece)];
}

at::Tensor HoldoutSplit::row_folds(int64_t first_window, int64_t sequences,
                                   c10::Device device) const {
  TORCH_CHECK(enabled(), "HoldoutSplit::row_folds: no split");
  std::vector<uint8_t> rows(static_cast<size_t>(sequences * seqlen_));
  for (int64_t s = 0; s < sequences; ++s)
    for (int64_t t = 0; t < seqlen_; ++t)
      rows[static_cast<size_t>(s * seqlen_ + t)] =
          static_cast<uint8_t>(fold(first_window + s, t / piece_length_));
  return at::tensor(at::ArrayRef<uint8_t>(rows)).to(device).to(at::kBool);
}

std::array<int64_t, 2> HoldoutSplit::pieces(int64_t first_window, int64_t sequences) const {
  std::array<int64_t, 2> count{0, 0};
  for (int64_t s = 0; s < sequences; ++s)
    for (int64_t p = 0; p < per_window_; ++p)
      ++count[static_cast<size_t>(fold(first_window + s, p))];
  return count;
}

}  // namespace sarqc

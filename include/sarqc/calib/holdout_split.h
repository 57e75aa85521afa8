#pragma once
// Two folds of the calibration tokens, for choosing SARQC's λ on data the
// rounding did not see
// (--lambda auto; README, "Choosing λ"). The unit of the split is a piece: a whole
// window when there are at least kMinPieces windows, else a contiguous stretch
// of one, so that even a single window splits. Pieces go to the folds by a
// permutation drawn from the seed, half each; the split depends on the windows
// alone, never on batches or ranks.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <vector>

namespace sarqc {

class HoldoutSplit {
 public:
  static constexpr int64_t kMinPieces = 4;

  HoldoutSplit() = default;  // no split
  HoldoutSplit(int64_t windows, int64_t seqlen, uint64_t seed);

  bool enabled() const { return !fold_.empty(); }
  int64_t pieces_per_window() const { return per_window_; }
  int64_t piece_length() const { return piece_length_; }
  // The fold (0 or 1) of piece `p` of window `w`.
  int fold(int64_t window, int64_t piece) const;
  // The fold of every token of `sequences` consecutive windows from
  // `first_window`, flattened as [sequences · seqlen] (a batch's rows), as a
  // bool tensor (true: fold 1) on `device`.
  at::Tensor row_folds(int64_t first_window, int64_t sequences, c10::Device device) const;
  // How many pieces of those windows each fold holds (its share of the
  // normaliser N).
  std::array<int64_t, 2> pieces(int64_t first_window, int64_t sequences) const;

 private:
  int64_t windows_ = 0, seqlen_ = 0, per_window_ = 1, piece_length_ = 0;
  std::vector<uint8_t> fold_;  // per piece, window-major
};

}  // namespace sarqc

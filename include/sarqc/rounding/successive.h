#pragma once
#include <cstdint>

#include "sarqc/rounding/rounder.h"

namespace sarqc {

// Successive rounding and its beam-search generalisation (CoreQ, arXiv 2602.05902; LDLQ of
// QuIP, arXiv 2307.13304; docs/methods.md §6.1, §6.2): Babai's
// nearest-plane decoding on the lattice of M. Columns are decided in options.order (decoded from
// the back of the reversed order), each target column corrected by the rounding errors of the
// columns already decided through the column-normalised lower Cholesky factor of M; group
// parameters come from the static target. Every row keeps the `beam` best partial decodings
// ranked by their exact partial cost Σ L_jj²(ŵ_j − q_j)²: one for "successive" (greedy),
// options.beam_width for "beam". Both run the same decoder, so beam width 1 is the greedy result
// by construction; ties are broken as docs/methods.md §6.2 prescribes.
class SuccessiveRounder : public Rounder {
 public:
  explicit SuccessiveRounder(bool beam) : beam_(beam) {}
  std::string name() const override { return beam_ ? "beam" : "successive"; }
  QuantizedLinear round(const at::Tensor& target, const at::Tensor& metric, const QuantGrid& grid,
                        const RoundingOptions& options) const override;
  bool supports_entry_penalty() const override { return true; }
  // Per-entry regularised rounding (docs/methods.md §5.2): the step cost of a level q at (i, j)
  // gains weight_ij (anchor_ij − q)²; its minimiser is the grid point nearest to
  // t = (L_jj² ŵ + w a) / (L_jj² + w).
  QuantizedLinear round_penalized(const at::Tensor& target, const at::Tensor& metric,
                                  const QuantGrid& grid, const RoundingOptions& options,
                                  const EntryPenalty& penalty) const override;

 private:
  bool beam_;
};

}  // namespace sarqc

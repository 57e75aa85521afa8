#pragma once
// Gram matrix H = (2/N) Σ X Xᵀ over N calibration sequences (docs/methods.md §1). Each batch's Gram
// is computed in fp32 (one GEMM) and added exactly (ExactSum), so the statistics depend only on
// the batches, not on their order or on how they are split between accumulators or ranks: two
// accumulators over disjoint batches merge into the one over all of them, bit for bit.
#include <cstdint>
#include <functional>

#include <ATen/core/Tensor.h>

#include "sarqc/calib/exact_sum.h"

namespace sarqc {

class GramAccumulator {
 public:
  GramAccumulator(int64_t features, c10::Device device);

  // x: [tokens, features] inputs seen for `sequences` calibration sequences (cast to fp32).
  void add(const at::Tensor& x, int64_t sequences);
  // Also accumulates the cross-Gram D = (2/N) Σ w_t (x_f − x)ᵀ x (docs/methods.md §1; row index =
  // channel of ΔX, column = channel of x) from the full-precision inputs x_f at the same tokens,
  // each token weighted by token_weight [tokens] (α_j of its sequence; ones for raw D).
  void add(const at::Tensor& x, const at::Tensor& x_fp, const at::Tensor& token_weight,
           int64_t sequences);
  // Adds another accumulator's batches to these.
  void merge(const GramAccumulator& other);
  // The same over processes: `sum` adds a tensor over every rank in place (same calls in the
  // same order on each); afterwards every rank holds the statistics of all ranks' sequences.
  void reduce(const std::function<void(at::Tensor&)>& sum);

  const at::Tensor& matrix() const;  // [features, features] fp32
  bool has_cross() const { return d_sum_.defined(); }
  const at::Tensor& cross() const;   // D, [features, features] fp32
  // mean over tokens of |x| per input channel (saliency statistics, docs/methods.md §5.2), fp32 [n]
  at::Tensor abs_mean() const;
  // Σ_t x_t x_tᵀ in fp64, and Σ_t (‖x_t‖²/n)²: the second and fourth moments behind the
  // Ledoit–Wolf shrinkage intensity (objective/lambda_search.h)
  at::Tensor sum_of_outer_products() const;
  double sum_of_squared_norms_squared() const;
  int64_t sequences() const { return sequences_; }
  int64_t tokens() const { return tokens_; }

 private:
  void changed();
  void check_input(const at::Tensor& x, int64_t sequences) const;
  void add_fp32(const at::Tensor& x32, int64_t sequences);  // checked, fp32, on the device
  int64_t features_;
  c10::Device device_;
  ExactSum h_sum_;    // Σ_t x_t x_tᵀ
  ExactSum d_sum_;    // Σ_t w_t (x_f − x)_t x_tᵀ; undefined until inputs of the FP stream come
  ExactSum abs_sum_;  // Σ_t |x_t| per channel
  ExactSum norm4_sum_;  // Σ_t (‖x_t‖²/n)², one element
  mutable at::Tensor h_, d_;  // (2/N)·the sums in fp32, made when first asked for
  int64_t sequences_ = 0;
  int64_t tokens_ = 0;
};

}  // namespace sarqc

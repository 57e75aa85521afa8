#include "sarqc/calib/gram.h"

#include <cmath>

#include <ATen/ATen.h>

namespace sarqc {

GramAccumulator::GramAccumulator(int64_t features, c10::Device device)
    : h_(at::zeros({features, features}, at::TensorOptions().dtype(at::kFloat).device(device))),
      abs_sum_(at::zeros({features}, at::TensorOptions().dtype(at::kFloat).device(device))) {}

void GramAccumulator::add(const at::Tensor& x, int64_t sequences) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == h_.size(0), "GramAccumulator::add: x must be [tokens, ",
              h_.size(0), "], got ", x.sizes());
  TORCH_CHECK(sequences >= 1, "GramAccumulator::add: sequences must be >= 1");
  const int64_t seen = sequences_ + sequences;
  h_.mul_(static_cast<double>(sequences_) / static_cast<double>(seen));
  const at::Tensor scaled = x.to(h_.device(), at::kFloat) * std::sqrt(2.0 / static_cast<double>(seen));
  h_.addmm_(scaled.t(), scaled);
  abs_sum_ += x.to(h_.device(), at::kFloat).abs().sum(0);
  sequences_ = seen;
  tokens_ += x.size(0);
}

void GramAccumulator::merge(const GramAccumulator& other) {
  TORCH_CHECK(other.h_.sizes() == h_.sizes(), "GramAccumulator::merge: sizes differ");
  const int64_t seen = sequences_ + other.sequences_;
  if (seen == 0) return;
  h_ = (h_ * static_cast<double>(sequences_) + other.h_.to(h_.device()) * static_cast<double>(other.sequences_)) /
       static_cast<double>(seen);
  sequences_ = seen;
  tokens_ += other.tokens_;
  abs_sum_ = abs_sum_ + other.abs_sum_.to(abs_sum_.device());
}

at::Tensor GramAccumulator::abs_mean() const {
  return abs_sum_ / static_cast<double>(std::max<int64_t>(tokens_, 1));
}

}  // namespace sarqc

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

void GramAccumulator::add(const at::Tensor& x, const at::Tensor& x_fp,
                          const at::Tensor& token_weight, int64_t sequences) {
  TORCH_CHECK(x_fp.sizes() == x.sizes() && token_weight.dim() == 1 &&
                  token_weight.size(0) == x.size(0),
              "GramAccumulator::add: x_fp must be ", x.sizes(), " and token_weight [", x.size(0),
              "], got ", x_fp.sizes(), " and ", token_weight.sizes());
  if (!d_.defined()) d_ = at::zeros_like(h_);
  const int64_t seen = sequences_ + sequences;
  d_.mul_(static_cast<double>(sequences_) / static_cast<double>(seen));
  const double c = std::sqrt(2.0 / static_cast<double>(seen));
  const at::Tensor xq = x.to(h_.device(), at::kFloat) * c;
  const at::Tensor delta = (x_fp.to(h_.device(), at::kFloat) * c - xq) *
                           token_weight.to(h_.device(), at::kFloat).unsqueeze(1);
  d_.addmm_(delta.t(), xq);
  add(x, sequences);  // H, |x| statistics and the counts
}

void GramAccumulator::merge(const GramAccumulator& other) {
  TORCH_CHECK(other.h_.sizes() == h_.sizes(), "GramAccumulator::merge: sizes differ");
  const int64_t seen = sequences_ + other.sequences_;
  if (seen == 0) return;
  const double a = static_cast<double>(sequences_) / static_cast<double>(seen);
  const double b = static_cast<double>(other.sequences_) / static_cast<double>(seen);
  h_ = h_ * a + other.h_.to(h_.device()) * b;
  if (d_.defined() || other.d_.defined()) {
    const at::Tensor mine = d_.defined() ? d_ : at::zeros_like(h_);
    const at::Tensor theirs = other.d_.defined() ? other.d_.to(h_.device()) : at::zeros_like(h_);
    d_ = mine * a + theirs * b;
  }
  sequences_ = seen;
  tokens_ += other.tokens_;
  abs_sum_ = abs_sum_ + other.abs_sum_.to(abs_sum_.device());
}

void GramAccumulator::reduce(const std::function<void(at::Tensor&)>& sum) {
  at::Tensor counts = at::tensor({static_cast<double>(sequences_), static_cast<double>(tokens_),
                                  d_.defined() ? 1.0 : 0.0},
                                 at::kDouble);
  sum(counts);
  const int64_t all = static_cast<int64_t>(counts[0].item<double>());
  // Running averages become sums (weighted by this rank's sequences), are added, and become
  // averages over all sequences again.
  at::Tensor h = h_ * static_cast<double>(sequences_);
  sum(h);
  h_ = all > 0 ? h / static_cast<double>(all) : h;
  if (counts[2].item<double>() > 0) {
    at::Tensor d = d_.defined() ? d_ * static_cast<double>(sequences_) : at::zeros_like(h_);
    sum(d);
    d_ = all > 0 ? d / static_cast<double>(all) : d;
  }
  sum(abs_sum_);
  sequences_ = all;
  tokens_ = static_cast<int64_t>(counts[1].item<double>());
}

at::Tensor GramAccumulator::abs_mean() const {
  return abs_sum_ / static_cast<double>(std::max<int64_t>(tokens_, 1));
}

}  // namespace sarqc

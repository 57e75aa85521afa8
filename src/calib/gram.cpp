#include "sarqc/calib/gram.h"

#include <ATen/ATen.h>

#include <vector>

namespace sarqc {

GramAccumulator::GramAccumulator(int64_t features, c10::Device device)
    : features_(features),
      device_(device),
      h_sum_({features, features}, device),
      abs_sum_({features}, device),
      norm4_sum_({1}, device) {}

void GramAccumulator::changed() {
  h_ = at::Tensor();
  d_ = at::Tensor();
}

void GramAccumulator::check_input(const at::Tensor& x, int64_t sequences) const {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == features_, "GramAccumulator::add: x must be [tokens, ",
              features_, "], got ", x.sizes());
  TORCH_CHECK(sequences >= 1, "GramAccumulator::add: sequences must be >= 1");
}

void GramAccumulator::add(const at::Tensor& x, int64_t sequences) {
  check_input(x, sequences);
  add_fp32(x.to(device_, at::kFloat), sequences);
}

void GramAccumulator::add_fp32(const at::Tensor& x32, int64_t sequences) {
  h_sum_.add(at::matmul(x32.t(), x32));
  abs_sum_.add(x32.abs().sum(0));
  // Σ_t (‖x_t‖²/n)² (the Ledoit–Wolf intensity's fourth moment), scaled by 1/n² to stay far
  // below ExactSum's 2^52 bound
  norm4_sum_.add((x32.pow(2).sum(1).to(at::kDouble) / static_cast<double>(features_))
                     .pow(2)
                     .sum()
                     .reshape({1}));
  sequences_ += sequences;
  tokens_ += x32.size(0);
  changed();
}

void GramAccumulator::add(const at::Tensor& x, const at::Tensor& x_fp,
                          const at::Tensor& token_weight, int64_t sequences) {
  check_input(x, sequences);
  TORCH_CHECK(x_fp.sizes() == x.sizes() && token_weight.dim() == 1 &&
                  token_weight.size(0) == x.size(0),
              "GramAccumulator::add: x_fp must be ", x.sizes(), " and token_weight [", x.size(0),
              "], got ", x_fp.sizes(), " and ", token_weight.sizes());
  if (!d_sum_.defined()) d_sum_ = ExactSum({features_, features_}, device_);
  const at::Tensor x32 = x.to(device_, at::kFloat);
  const at::Tensor delta = (x_fp.to(device_, at::kFloat) - x32) *
                           token_weight.to(device_, at::kFloat).unsqueeze(1);
  d_sum_.add(at::matmul(delta.t(), x32));
  add_fp32(x32, sequences);  // H, |x| statistics and the counts
}

void GramAccumulator::merge(const GramAccumulator& other) {
  TORCH_CHECK(other.features_ == features_, "GramAccumulator::merge: sizes differ");
  h_sum_.add(other.h_sum_);
  abs_sum_.add(other.abs_sum_);
  norm4_sum_.add(other.norm4_sum_);
  if (other.d_sum_.defined()) {
    if (!d_sum_.defined()) d_sum_ = ExactSum({features_, features_}, device_);
    d_sum_.add(other.d_sum_);
  }
  sequences_ += other.sequences_;
  tokens_ += other.tokens_;
  changed();
}

void GramAccumulator::reduce(const std::function<void(at::Tensor&)>& sum) {
  // sequences, tokens, ranks, ranks holding D: integers, summed exactly
  const std::vector<int64_t> mine = {sequences_, tokens_, 1, d_sum_.defined() ? 1 : 0};
  at::Tensor counts = at::tensor(mine, at::kLong);
  sum(counts);
  const int64_t ranks = counts[2].item<int64_t>();
  h_sum_.reduce(sum, ranks);
  if (counts[3].item<int64_t>() > 0) {
    if (!d_sum_.defined()) d_sum_ = ExactSum({features_, features_}, device_);
    d_sum_.reduce(sum, ranks);
  }
  abs_sum_.reduce(sum, ranks);
  norm4_sum_.reduce(sum, ranks);
  sequences_ = counts[0].item<int64_t>();
  tokens_ = counts[1].item<int64_t>();
  changed();
}

namespace {

// (2/N)·sum in fp32 (zeros before any sequence).
at::Tensor average(const ExactSum& sum, int64_t sequences) {
  return sum.value(at::kFloat, 2.0 / static_cast<double>(std::max<int64_t>(sequences, 1)));
}

}  // namespace

const at::Tensor& GramAccumulator::matrix() const {
  if (!h_.defined()) h_ = average(h_sum_, sequences_);
  return h_;
}

const at::Tensor& GramAccumulator::cross() const {
  TORCH_CHECK(has_cross(), "GramAccumulator::cross: no full-precision inputs were added");
  if (!d_.defined()) d_ = average(d_sum_, sequences_);
  return d_;
}

at::Tensor GramAccumulator::sum_of_outer_products() const { return h_sum_.value(); }

double GramAccumulator::sum_of_squared_norms_squared() const {
  return norm4_sum_.value().item<double>();
}

at::Tensor GramAccumulator::abs_mean() const {
  return (abs_sum_.value() / static_cast<double>(std::max<int64_t>(tokens_, 1))).to(at::kFloat);
}

}  // namespace sarqc

#include "sarqc/quant/grid.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/util/error.h"

namespace sarqc {
namespace {

constexpr double kFp16Min = 5.960464477539063e-08;  // 2^-24, the smallest positive fp16
constexpr double kFp16Max = 65504.0;

// fp16 rounding of the scale, kept positive and finite: a scale that underflows fp16 becomes its
// smallest subnormal (such a group is all but zero anyway), one beyond fp16's range its largest
// value, so the grid saturates there instead of producing inf and NaN (the pipeline refuses
// weights that need more, README "Bad input").
at::Tensor round_scale(const at::Tensor& s) {
  return s.to(at::kHalf).to(s.scalar_type()).clamp(kFp16Min, kFp16Max);
}

// The largest fp16 value <= s (at least 2^-24). The symmetric grid puts −max|x| exactly on code 0
// only when max|x| / s is exactly 2^(b−1) (a tie that rounds to even): a scale rounded up would
// move the row's largest-magnitude weight one step inward. On babyllama-tok105 RTN, nearest
// rounding of the scale cost 0.5 % (4 bits) and 2.3 % (3 bits) perplexity; rounding down costs
// nothing. Positive fp16 values are ordered like their bit patterns, so one step down is the
// pattern minus one, for normal and subnormal values alike.
at::Tensor round_scale_down(const at::Tensor& s) {
  const at::Tensor r = round_scale(s);
  const at::Tensor below = (r.to(at::kHalf).view(at::kShort) - 1).clamp_min(1).view(at::kHalf);
  return at::where(r > s, below.to(s.scalar_type()), r);
}

// Column view helpers: params are per row, broadcast over the group's columns.
at::Tensor per_row(const at::Tensor& p, const at::Tensor& x) {
  return x.dim() == 2 ? p.unsqueeze(1) : p;
}

GroupParams params_for_range(const at::Tensor& lo_in, const at::Tensor& hi_in,
                             const QuantGrid& grid) {
  const double maxq = static_cast<double>(grid.maxq());
  if (grid.sym) {
    at::Tensor a = at::maximum(lo_in.abs(), hi_in.abs());
    a = at::where(a == 0, at::ones_like(a), a);
    const at::Tensor s = round_scale_down(2 * a / maxq);
    return {s, at::full_like(s, static_cast<double>(int64_t{1} << (grid.bits - 1)))};
  }
  at::Tensor lo = lo_in.clamp_max(0), hi = hi_in.clamp_min(0);
  const at::Tensor both_zero = (lo == 0).logical_and(hi == 0);
  lo = at::where(both_zero, -at::ones_like(lo), lo);
  hi = at::where(both_zero, at::ones_like(hi), hi);
  const at::Tensor s = round_scale((hi - lo) / maxq);
  return {s, at::round(-lo / s).clamp(0, maxq)};
}

}  // namespace

void QuantGrid::validate() const {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    throw_usage(fmt::format("--bits: expected 2, 3, 4 or 8, got {}", bits));
  if (group_size == 0 || group_size < -1)
    throw_usage(fmt::format("--group-size: expected -1 (per output channel) or a positive "
                            "divisor of in_features, got {}",
                            group_size));
}

std::string QuantGrid::describe() const {
  return fmt::format("{}-bit {} {}{}", bits, sym ? "sym" : "asym",
                     group_size < 0 ? std::string("per-channel") : fmt::format("g{}", group_size),
                     mse_clip ? " mse-clip" : "");
}

GroupParams find_params(const at::Tensor& x, const QuantGrid& grid) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) > 0, "find_params: x must be [rows, k>0], got ",
              x.sizes());
  const at::Tensor lo = std::get<0>(x.min(1)), hi = std::get<0>(x.max(1));
  GroupParams best = params_for_range(lo, hi, grid);
  if (!grid.mse_clip) return best;
  // Shrink the range by p = 1 − i/100 for i < 80 and keep the smallest Σ|quant(x) − x|^2.4
  // (the first such p). The shrink steps are evaluated together, in chunks of about 16 MiB of
  // candidates: one pass of a few kernels instead of 80 (a group's params are found once per
  // group, so this is in GPTQ's per-group loop).
  constexpr int64_t kSteps = 80;
  const int64_t rows = x.size(0), k = x.size(1);
  const int64_t step_bytes = std::max<int64_t>(1, rows * k * static_cast<int64_t>(x.element_size()));
  const int64_t chunk = std::clamp<int64_t>((int64_t{16} << 20) / step_bytes, 1, kSteps);
  at::Tensor best_err = at::full({rows}, std::numeric_limits<double>::infinity(), x.options());
  for (int64_t i0 = 0; i0 < kSteps; i0 += chunk) {
    const int64_t c = std::min(chunk, kSteps - i0);
    const at::Tensor shrink = (1.0 - at::arange(i0, i0 + c, x.options()) / 100.0).unsqueeze(1);
    const GroupParams cand = params_for_range((lo.unsqueeze(0) * shrink).reshape({-1}),
                                              (hi.unsqueeze(0) * shrink).reshape({-1}), grid);
    const at::Tensor xs = x.unsqueeze(0).expand({c, rows, k}).reshape({c * rows, k});
    const at::Tensor q = dequantize_codes(quantize_codes(xs, cand, grid.maxq()), cand);
    const auto [err, step] = (q - xs).abs().pow(2.4).sum(1).view({c, rows}).min(0);
    const at::Tensor better = err < best_err;
    const auto pick = [&](const at::Tensor& v) {
      return v.view({c, rows}).gather(0, step.unsqueeze(0)).squeeze(0);
    };
    best_err = at::where(better, err, best_err);
    best.scale = at::where(better, pick(cand.scale), best.scale);
    best.zero = at::where(better, pick(cand.zero), best.zero);
  }
  return best;
}

at::Tensor quantize_codes(const at::Tensor& x, const GroupParams& p, int64_t maxq) {
  return at::clamp(at::round(x / per_row(p.scale, x)) + per_row(p.zero, x), 0,
                   static_cast<double>(maxq));
}

at::Tensor dequantize_codes(const at::Tensor& codes, const GroupParams& p) {
  return per_row(p.scale, codes) * (codes - per_row(p.zero, codes));
}

}  // namespace sarqc

#include "sarqc/calib/exact_sum.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace sarqc {
namespace {

constexpr int kHighShift = 8;    // the high part counts units of 2^8
constexpr int kLowShift = 48;    // the low part counts units of 2^-48
constexpr int kLowBits = kHighShift + kLowShift;  // a term's low part is below 2^56
constexpr int kMaxPending = 64;  // 64 low parts of magnitude below 2^56 stay below 2^62
constexpr double kLimit = 4503599627370496.0;  // 2^52: high parts below 2^44 leave room for 2^19 terms

}  // namespace

ExactSum::ExactSum(at::IntArrayRef shape, c10::Device device) {
  const auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  high_ = at::zeros(shape, opts);
  low_ = at::zeros(shape, opts);
  invalid_ = at::zeros({}, opts.dtype(at::kBool));
}

namespace {

// Adds the high and low parts of `term` to `high` and `low` (views of the same shape).
void accumulate(const at::Tensor& term, at::Tensor high, at::Tensor low, at::Tensor& invalid) {
  // fp64 holds every fp32 term exactly, and the cuts below are exact in it: the high part is the
  // term truncated to a multiple of 2^8 (below 2^52), the rest keeps the term's bits below 2^8.
  const at::Tensor t = term.to(high.device(), at::kDouble);
  const at::Tensor ok = t.abs() < kLimit;  // false for NaN and inf too
  invalid.logical_or_(ok.logical_not().any());
  // Invalid terms would convert to arbitrary integers: they count as zero (value() is NaN).
  const at::Tensor valid = at::where(ok, t, at::zeros_like(t));
  const at::Tensor h = at::trunc(valid * std::ldexp(1.0, -kHighShift));
  const at::Tensor rest = valid - h * std::ldexp(1.0, kHighShift);  // in (-2^8, 2^8)
  high.add_(h.to(at::kLong));
  low.add_(at::trunc(rest * std::ldexp(1.0, kLowShift)).to(at::kLong));
}

// The same cuts in one pass over a contiguous host term (the element-wise ATen path above reads
// and writes the whole matrix a dozen times, as much as the batch's GEMM on a CPU).
template <typename T>
void accumulate_on_host(const at::Tensor& term, at::Tensor& high, at::Tensor& low,
                        at::Tensor& invalid) {
  const T* t = term.data_ptr<T>();
  int64_t* hi = high.data_ptr<int64_t>();
  int64_t* lo = low.data_ptr<int64_t>();
  std::atomic<bool> bad{false};
  at::parallel_for(0, term.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    bool any_bad = false;
    for (int64_t i = begin; i < end; ++i) {
      const double v = static_cast<double>(t[i]);
      if (!(std::fabs(v) < kLimit)) {  // NaN, inf or too large: counts as zero, value() NaN
        any_bad = true;
        continue;
      }
      const double h = std::trunc(v * std::ldexp(1.0, -kHighShift));
      hi[i] += static_cast<int64_t>(h);
      lo[i] += static_cast<int64_t>(std::trunc((v - h * std::ldexp(1.0, kHighShift)) *
                                               std::ldexp(1.0, kLowShift)));
    }
    if (any_bad) bad = true;
  });
  if (bad) invalid.fill_(true);
}

}  // namespace

void ExactSum::add(const at::Tensor& term) {
  TORCH_CHECK(defined(), "ExactSum::add: the accumulator has no shape");
  TORCH_CHECK(term.sizes() == high_.sizes() && at::isFloatingType(term.scalar_type()),
              "ExactSum::add: term must be a floating tensor of shape ", high_.sizes(), ", got ",
              term.scalar_type(), " ", term.sizes());
  if (term.device().is_cpu() && high_.device().is_cpu() && term.is_contiguous() &&
      (term.scalar_type() == at::kFloat || term.scalar_type() == at::kDouble)) {
    if (term.scalar_type() == at::kFloat)
      accumulate_on_host<float>(term, high_, low_, invalid_);
    else
      accumulate_on_host<double>(term, high_, low_, invalid_);
    if (++pending_ >= kMaxPending) carry();
    return;
  }
  // Row blocks of at most 4 Mi elements bound the fp64 temporaries of a large Gram.
  const int64_t rows = term.dim() == 0 ? 1 : term.size(0);
  const int64_t row = rows == 0 ? 1 : std::max<int64_t>(term.numel() / rows, 1);
  const int64_t step = std::max<int64_t>(1, (int64_t{1} << 22) / row);
  if (term.dim() == 0 || rows <= step) {
    accumulate(term, high_, low_, invalid_);
  } else {
    for (int64_t r = 0; r < rows; r += step) {
      const int64_t k = std::min(step, rows - r);
      accumulate(term.narrow(0, r, k), high_.narrow(0, r, k), low_.narrow(0, r, k), invalid_);
    }
  }
  if (++pending_ >= kMaxPending) carry();
}

void ExactSum::add(const ExactSum& other) {
  TORCH_CHECK(defined() && other.defined() && other.high_.sizes() == high_.sizes(),
              "ExactSum::add: shapes differ");
  ExactSum theirs = other;  // copies: carry() works in place
  theirs.high_ = other.high_.to(high_.device(), at::kLong, false, /*copy=*/true);
  theirs.low_ = other.low_.to(high_.device(), at::kLong, false, /*copy=*/true);
  theirs.carry();
  carry();
  high_.add_(theirs.high_);
  low_.add_(theirs.low_);
  invalid_.logical_or_(other.invalid_.to(high_.device()));
  carry();
}

namespace {

// Moves whole units of 2^8 from the low part to the high part, so that low is in [0, 2^56).
void carry_parts(at::Tensor& high, at::Tensor& low) {
  const at::Tensor units = at::div(low, int64_t{1} << kLowBits, "floor");
  high.add_(units);
  low.sub_(units * (int64_t{1} << kLowBits));
}

// Temporaries of value() per element: the two int64 copies, the carry's two int64 tensors and
// three fp64 ones.
constexpr int64_t kValueBytesPerElement = 7 * 8;

}  // namespace

int64_t ExactSum::value_scratch_bytes(int64_t numel) {
  return std::min(numel * kValueBytesPerElement,
                  kValueScratchBytes / kValueBytesPerElement * kValueBytesPerElement);
}

void ExactSum::carry() {
  carry_parts(high_, low_);
  pending_ = 0;
}

void ExactSum::reduce(const std::function<void(at::Tensor&)>& sum, int64_t ranks) {
  TORCH_CHECK(defined(), "ExactSum::reduce: the accumulator has no shape");
  carry();
  sum(high_);
  if (ranks < 128) {  // low parts below 2^56 from fewer than 128 ranks sum below 2^63
    sum(low_);
  } else {  // in halves of 28 bits, each summing below 2^63 for any number of ranks
    const int64_t half = int64_t{1} << (kLowBits / 2);
    at::Tensor top = at::div(low_, half, "floor");
    at::Tensor bottom = low_ - top * half;
    sum(top);
    sum(bottom);
    const at::Tensor units = at::div(top, half, "floor");  // whole units of 2^56 = 2^8
    high_.add_(units);
    low_ = (top - units * half) * half + bottom;
  }
  at::Tensor flag = invalid_.to(at::kLong);
  sum(flag);
  invalid_ = flag.gt(0);
  carry();
}

at::Tensor ExactSum::value(at::ScalarType dtype, double scale) const {
  TORCH_CHECK(defined(), "ExactSum::value: the accumulator has no shape");
  at::Tensor out = at::empty(high_.sizes(), high_.options().dtype(dtype));
  const at::Tensor high = high_.reshape({-1}), low = low_.reshape({-1});
  at::Tensor flat = out.view({-1});
  const int64_t n = high.numel(), step = kValueScratchBytes / kValueBytesPerElement;
  for (int64_t begin = 0; begin < n; begin += step) {
    const int64_t k = std::min(step, n - begin);
    at::Tensor h = high.narrow(0, begin, k).clone(), l = low.narrow(0, begin, k).clone();
    carry_parts(h, l);  // a canonical (high, low) pair, so that equal sums round alike
    at::Tensor v = h.to(at::kDouble) * std::ldexp(1.0, kHighShift) +
                   l.to(at::kDouble) * std::ldexp(1.0, -kLowShift);
    if (scale != 1.0) v.mul_(scale);
    flat.narrow(0, begin, k).copy_(v);
  }
  return out.masked_fill_(invalid_, NAN);  // a scalar mask: no host synchronisation
}

}  // namespace sarqc

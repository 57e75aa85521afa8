#pragma once
// An element-wise sum of floating-point tensors that is exact over its terms, so that it does not
// depend on the order in which they are added or on how they are split between accumulators (or
// ranks): the statistics of a run come out bit for bit the same on one process and on any
// number of ranks. Each term is cut at fixed binary points into two integers, a high part in
// units of 2^8 and a low part in units of 2^-48 (the term's bits below 2^-48 are dropped, toward
// zero), and the integers are added: integer addition is associative. Terms must stay below 2^52 in
// magnitude; a larger or non-finite term makes every element of value() NaN (the statistics are
// unusable, and the objective says so).
#include <cstdint>
#include <functional>

#include <ATen/core/Tensor.h>

namespace sarqc {

class ExactSum {
 public:
  ExactSum() = default;
  ExactSum(at::IntArrayRef shape, c10::Device device);

  bool defined() const { return high_.defined(); }
  // term: the accumulator's shape, any floating dtype, on any device (no host synchronisation).
  void add(const at::Tensor& term);
  // Adds another accumulator's terms.
  void add(const ExactSum& other);
  // The sum over every process: `sum` adds an int64 tensor over the ranks in place (the same
  // calls in the same order on each rank); `ranks` is their number.
  void reduce(const std::function<void(at::Tensor&)>& sum, int64_t ranks);
  // scale × the sum, computed in fp64 from the exact integers (rounded once, then multiplied)
  // and stored as `dtype`. Row blocks bound the temporaries to kValueScratchBytes besides the
  // result: whole-tensor int64 copies and fp64 terms took ~56 bytes per element, ~46 GB for
  // the Gram of a 70B down_proj (28,672 inputs).
  at::Tensor value(at::ScalarType dtype = at::kDouble, double scale = 1.0) const;
  static constexpr int64_t kValueScratchBytes = int64_t{64} << 20;
  // value()'s temporaries for a sum of `numel` elements (56 bytes each, at most the bound).
  static int64_t value_scratch_bytes(int64_t numel);

 private:
  void carry();
  at::Tensor high_;     // int64, units of 2^8
  at::Tensor low_;      // int64, units of 2^-48, in [0, 2^56) after carry()
  at::Tensor invalid_;  // bool scalar: some term was non-finite or too large
  int pending_ = 0;     // terms added to low_ since its last carry
};

}  // namespace sarqc

#pragma once
// The uniform quantizer of docs/methods.md §2: b bits, per (row, group) scale s > 0 and integer
// zero z ∈ [0, maxq]; code(x) = clamp(round(x/s) + z, 0, maxq) (round half to even),
// deq(c) = s·(c − z). Scales are rounded to fp16, the stored dtype, as soon as they are computed.
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

namespace sarqc {

struct QuantGrid {
  int bits = 4;
  int64_t group_size = 128;  // -1: one group per row
  bool sym = true;
  // GPTQ-reference shrink search (grid 100, maxshrink 0.8, norm 2.4); on by default: on SmolLM2
  // it cut the KL divergence of W3 g64 GPTQ by a third (BENCHMARKS.md, "Real models").
  bool mse_clip = true;

  int64_t maxq() const { return (int64_t{1} << bits) - 1; }
  // Throws a usage error naming the flag for bits outside {2,3,4,8} or group size 0 or < -1.
  void validate() const;
  std::string describe() const;  // "4-bit sym g128"
};

// Per-row parameters of one group: scale [rows] (values exactly representable in fp16) and
// zero [rows] (integral), both in x's floating dtype.
struct GroupParams {
  at::Tensor scale;
  at::Tensor zero;
};

// x: [rows, k] values of one group (k = group width, or the whole row).
GroupParams find_params(const at::Tensor& x, const QuantGrid& grid);

// Integer codes (as x's floating dtype) of x [rows] or [rows, k] under params.
at::Tensor quantize_codes(const at::Tensor& x, const GroupParams& params, int64_t maxq);
at::Tensor dequantize_codes(const at::Tensor& codes, const GroupParams& params);

}  // namespace sarqc

#include "sarqc/quant/quantized_linear.h"

#include <ATen/ATen.h>

namespace sarqc {

at::Tensor QuantizedLinear::dequantize() const {
  // Gathered along rows of [m, G] copies, so every operand is a contiguous [m, n] (gathering
  // [G, m] and transposing made the element-wise pass stride through memory: 3× slower).
  const at::Tensor idx = g_idx.to(at::kLong);
  const at::Tensor s = scales.t().contiguous().index_select(1, idx);  // [m, n]
  const at::Tensor z = zeros.t().to(at::kFloat).contiguous().index_select(1, idx);
  return s * (codes.to(at::kFloat) - z);
}

bool QuantizedLinear::reordered() const {
  if (grid.group_size <= 0) return false;
  const at::Tensor natural =
      at::div(at::arange(g_idx.size(0), g_idx.options()), grid.group_size, "floor");
  return !at::equal(g_idx, natural.to(g_idx.scalar_type()));
}

}  // namespace sarqc

#include "sarqc/quant/quantized_linear.h"

#include <ATen/ATen.h>

namespace sarqc {

at::Tensor QuantizedLinear::dequantize() const {
  const at::Tensor idx = g_idx.to(at::kLong);
  const at::Tensor s = scales.index_select(0, idx).t();  // [m, n]
  const at::Tensor z = zeros.index_select(0, idx).t().to(at::kFloat);
  return s * (codes.to(at::kFloat) - z);
}

bool QuantizedLinear::reordered() const {
  if (grid.group_size <= 0) return false;
  const at::Tensor natural =
      at::div(at::arange(g_idx.size(0), g_idx.options()), grid.group_size, "floor");
  return !at::equal(g_idx, natural.to(g_idx.scalar_type()));
}

}  // namespace sarqc

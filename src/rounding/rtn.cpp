#include "sarqc/rounding/rtn.h"

#include <ATen/ATen.h>

namespace sarqc {

QuantizedLinear RtnRounder::round(const at::Tensor& target, const at::Tensor& metric,
                                  const QuantGrid& grid, const RoundingOptions& /*options*/) const {
  TORCH_CHECK(target.dim() == 2, "rtn: target must be [out, in], got ", target.sizes());
  const int64_t n = target.size(1);
  const int64_t g = grid.group_size > 0 ? grid.group_size : n;
  TORCH_CHECK(n % g == 0, "rtn: group size ", g, " does not divide in_features ", n);
  // Every group of every row at once, as rows of [m·G, g]: one find_params, no per-group loop.
  const int64_t m = target.size(0), G = n / g;
  const at::Tensor x = target.contiguous().view({m * G, g});
  const GroupParams p = find_params(x, grid);
  const at::Tensor codes = quantize_codes(x, p, grid.maxq()).view({m, n});
  const std::vector<at::Tensor> scales = p.scale.view({m, G}).t().unbind(0);
  const std::vector<at::Tensor> zeros = p.zero.view({m, G}).t().unbind(0);
  const at::Tensor perm = at::arange(n, at::TensorOptions().dtype(at::kLong).device(target.device()));
  QuantizedLinear q = assemble_quantized(grid, codes, scales, zeros, perm, false);
  if (metric.defined()) {  // report E(Q) like the metric-aware backends do
    const at::Tensor diff = q.dequantize().to(target.scalar_type()) - target;
    q.loss = (at::matmul(diff, metric) * diff).sum().item<double>();
  }
  return q;
}

}  // namespace sarqc

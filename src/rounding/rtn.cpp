#include "sarqc/rounding/rtn.h"

#include <ATen/ATen.h>

namespace sarqc {

QuantizedLinear RtnRounder::round(const at::Tensor& target, const at::Tensor& metric,
                                  const QuantGrid& grid, const RoundingOptions& /*options*/) const {
  TORCH_CHECK(target.dim() == 2, "rtn: target must be [out, in], got ", target.sizes());
  const int64_t n = target.size(1);
  const int64_t g = grid.group_size > 0 ? grid.group_size : n;
  TORCH_CHECK(n % g == 0, "rtn: group size ", g, " does not divide in_features ", n);
  std::vector<at::Tensor> codes, scales, zeros;
  for (int64_t c = 0; c < n; c += g) {
    const at::Tensor x = target.narrow(1, c, g);
    const GroupParams p = find_params(x, grid);
    codes.push_back(quantize_codes(x, p, grid.maxq()));
    scales.push_back(p.scale);
    zeros.push_back(p.zero);
  }
  const at::Tensor perm = at::arange(n, at::TensorOptions().dtype(at::kLong).device(target.device()));
  QuantizedLinear q = assemble_quantized(grid, at::cat(codes, 1), scales, zeros, perm, false);
  if (metric.defined()) {  // report E(Q) like the metric-aware backends do
    const at::Tensor diff = q.dequantize().to(target.scalar_type()) - target;
    q.loss = (at::matmul(diff, metric) * diff).sum().item<double>();
  }
  return q;
}

}  // namespace sarqc

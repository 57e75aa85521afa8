#include "sarqc/model/rms_norm.h"

#include <ATen/ATen.h>

namespace sarqc {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, double offset) {
  TORCH_CHECK(weight.dim() == 1 && x.size(-1) == weight.size(0), "rms_norm: weight must be [",
              x.size(-1), "], got ", weight.sizes());
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  if (offset != 0) return (normed * (weight.to(at::kFloat) + offset)).to(x.scalar_type());
  return weight * normed.to(x.scalar_type());
}

}  // namespace sarqc

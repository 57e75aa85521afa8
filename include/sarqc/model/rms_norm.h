#pragma once
#include <ATen/core/Tensor.h>

namespace sarqc {

// x·rsqrt(mean(x²) + eps) over the last dimension, computed in fp32 and cast back to x's dtype,
// then multiplied by `weight` (HF's LlamaRMSNorm order, which matters for bf16/fp16).
// offset != 0 (Gemma): multiplied by (offset + weight) in fp32 before the cast (Gemma3RMSNorm).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, double offset = 0);

}  // namespace sarqc

#pragma once
// The four GPTQ tensors of a quantized linear (docs/formats.md §3–§6) <-> QuantizedLinear / dense.
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/io/safetensors_writer.h"
#include "sarqc/quant/quantized_linear.h"

namespace sarqc {

struct GptqTensors {
  at::Tensor qweight;  // int32 [n·b/32, m]
  at::Tensor qzeros;   // int32 [G, m·b/32]
  at::Tensor scales;   // fp16 [G, m]
  at::Tensor g_idx;    // int32 [n]
};

// v1 ("gptq") stores zero − 1 in every field, v2 ("gptq_v2") the true zero. Asymmetric grids are
// written only as v2 (v1 cannot store z = 0).
GptqTensors to_gptq_tensors(const QuantizedLinear& q, bool v2);

// Dense fp32 [m, n] weight: scales[g_idx[i], o] · (code[i, o] − z[g_idx[i], o]). Validates shapes
// and g_idx range; `name` is used in error messages.
at::Tensor dequantize_gptq(const GptqTensors& t, int bits, bool v2, int64_t in_features,
                           int64_t out_features, const std::string& name);

// Names and shapes the writer plans for module `name`.
std::vector<TensorSpec> gptq_tensor_specs(const std::string& name, int64_t in_features,
                                          int64_t out_features, int bits, int64_t group_size);

}  // namespace sarqc

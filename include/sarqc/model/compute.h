#pragma once
// Where and in which precision a forward pass runs.
#include <cstdint>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace sarqc {

struct ComputeOptions {
  c10::Device device{c10::kCPU};
  // Activations and weights are cast to this type for the forward; norms, softmax, routing and
  // the loss are computed in fp32 regardless.
  c10::ScalarType dtype = c10::kFloat;
  // Activations of all sequences stay on the compute device when they fit in this many bytes,
  // otherwise they wait in host memory between layers. Ignored on CPU.
  int64_t device_activation_budget = int64_t{8} << 30;
  // Upper bound on the attention score buffer of one chunk of queries (bytes); 0: chosen for the
  // device (small enough to stay in a CPU's cache, large on a GPU).
  int64_t attention_chunk_bytes = 0;
};

// "fp32" | "bf16" | "fp16" -> scalar type; throws a usage error naming the flag otherwise.
c10::ScalarType parse_activation_dtype(const std::string& text);
std::string activation_dtype_name(c10::ScalarType type);

// Whether this libtorch can run the forward's matmuls in `dtype` on `device` (libtorch 1.13 has
// no fp16 matmul on CPU); check_ throws a usage error naming --dtype when it cannot.
bool dtype_supported(c10::Device device, c10::ScalarType dtype);
void check_dtype_supported(c10::Device device, c10::ScalarType dtype);

}  // namespace sarqc

#include "sarqc/model/compute.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/util/error.h"

namespace sarqc {

c10::ScalarType parse_activation_dtype(const std::string& text) {
  if (text == "fp32" || text == "float32") return c10::kFloat;
  if (text == "bf16" || text == "bfloat16") return c10::kBFloat16;
  if (text == "fp16" || text == "float16") return c10::kHalf;
  throw_usage(fmt::format("--dtype: expected fp32, bf16 or fp16, got '{}'", text));
}

std::string activation_dtype_name(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat: return "fp32";
    case c10::kBFloat16: return "bf16";
    case c10::kHalf: return "fp16";
    default: return c10::toString(type);
  }
}

bool dtype_supported(c10::Device device, c10::ScalarType dtype) {
  try {
    const auto x = at::ones({2, 2}, at::TensorOptions().device(device).dtype(dtype));
    (void)at::linear(x, x);
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

void check_dtype_supported(c10::Device device, c10::ScalarType dtype) {
  if (!dtype_supported(device, dtype))
    throw_usage(fmt::format("--dtype {} is not supported on {} by this libtorch build; use fp32 "
                            "or bf16 there",
                            activation_dtype_name(dtype), device.str()));
}

}  // namespace sarqc

#include "sarqc/model/compute.h"

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

}  // namespace sarqc

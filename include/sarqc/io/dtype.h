#pragma once
// The safetensors dtype vocabulary and its mapping to ATen scalar types.
#include <cstddef>
#include <optional>
#include <string_view>

#include <c10/core/ScalarType.h>

namespace sarqc {

enum class Dtype { BOOL, U8, I8, F8_E4M3, F8_E5M2, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

std::optional<Dtype> dtype_from_name(std::string_view name);  // "F32" -> Dtype::F32
std::string_view dtype_name(Dtype dtype);
size_t dtype_itemsize(Dtype dtype);

// nullopt when the linked libtorch has no such scalar type (e.g. U16 or F8 before PyTorch 2.1/2.3).
std::optional<c10::ScalarType> to_scalar_type(Dtype dtype);
// Throws a bad-input error for scalar types safetensors cannot store (complex, quantized, ...).
Dtype dtype_from_scalar_type(c10::ScalarType type);

}  // namespace sarqc

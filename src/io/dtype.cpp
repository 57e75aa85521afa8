#include "sarqc/io/dtype.h"

#include <array>

#include <fmt/format.h>
#include <torch/csrc/api/include/torch/version.h>

#include "sarqc/util/error.h"

namespace sarqc {
namespace {

struct DtypeRow {
  Dtype dtype;
  std::string_view name;
  size_t itemsize;
};

constexpr std::array<DtypeRow, 15> kDtypes = {{
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},       {Dtype::I8, "I8", 1},
    {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::F8_E5M2, "F8_E5M2", 1},
    {Dtype::I16, "I16", 2},   {Dtype::U16, "U16", 2},     {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::I32, "I32", 4},     {Dtype::U32, "U32", 4},
    {Dtype::F32, "F32", 4},   {Dtype::I64, "I64", 8},     {Dtype::U64, "U64", 8},
    {Dtype::F64, "F64", 8},
}};

const DtypeRow& row(Dtype dtype) { return kDtypes[static_cast<size_t>(dtype)]; }

// Newer PyTorch releases added scalar types that 1.13 lacks; guard them by version.
#define SARQC_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

}  // namespace

std::optional<Dtype> dtype_from_name(std::string_view name) {
  for (const auto& r : kDtypes)
    if (r.name == name) return r.dtype;
  return std::nullopt;
}

std::string_view dtype_name(Dtype dtype) { return row(dtype).name; }
size_t dtype_itemsize(Dtype dtype) { return row(dtype).itemsize; }

std::optional<c10::ScalarType> to_scalar_type(Dtype dtype) {
  switch (dtype) {
    case Dtype::BOOL: return c10::ScalarType::Bool;
    case Dtype::U8: return c10::ScalarType::Byte;
    case Dtype::I8: return c10::ScalarType::Char;
    case Dtype::I16: return c10::ScalarType::Short;
    case Dtype::F16: return c10::ScalarType::Half;
    case Dtype::BF16: return c10::ScalarType::BFloat16;
    case Dtype::I32: return c10::ScalarType::Int;
    case Dtype::F32: return c10::ScalarType::Float;
    case Dtype::I64: return c10::ScalarType::Long;
    case Dtype::F64: return c10::ScalarType::Double;
#if SARQC_TORCH_AT_LEAST(2, 1)
    case Dtype::F8_E4M3: return c10::ScalarType::Float8_e4m3fn;
    case Dtype::F8_E5M2: return c10::ScalarType::Float8_e5m2;
#endif
#if SARQC_TORCH_AT_LEAST(2, 3)
    case Dtype::U16: return c10::ScalarType::UInt16;
    case Dtype::U32: return c10::ScalarType::UInt32;
    case Dtype::U64: return c10::ScalarType::UInt64;
#endif
    default: return std::nullopt;
  }
}

Dtype dtype_from_scalar_type(c10::ScalarType type) {
  for (const auto& r : kDtypes) {
    const auto mapped = to_scalar_type(r.dtype);
    if (mapped && *mapped == type) return r.dtype;
  }
  throw_bad_input(fmt::format("tensor dtype {} cannot be stored in safetensors",
                              c10::toString(type)));
}

}  // namespace sarqc

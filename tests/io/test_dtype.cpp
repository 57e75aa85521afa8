#include <gtest/gtest.h>

#include "sarqc/io/dtype.h"
#include "test_support.h"

namespace sarqc {
namespace {

TEST(Dtype, NamesAndItemsizesFollowTheSafetensorsSpec) {
  const std::pair<const char*, size_t> spec[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},   {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2},  {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8},  {"U64", 8},     {"F64", 8}};
  for (const auto& [name, size] : spec) {
    const auto dtype = dtype_from_name(name);
    ASSERT_TRUE(dtype.has_value()) << name;
    EXPECT_EQ(dtype_name(*dtype), name);
    EXPECT_EQ(dtype_itemsize(*dtype), size) << name;
  }
  EXPECT_FALSE(dtype_from_name("F33").has_value());
  EXPECT_FALSE(dtype_from_name("f32").has_value());
}

TEST(Dtype, ScalarTypesRoundTripAndMatchItemsize) {
  for (const char* name : {"BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "I64", "F64"}) {
    const Dtype dtype = *dtype_from_name(name);
    const auto scalar = to_scalar_type(dtype);
    ASSERT_TRUE(scalar.has_value()) << name;
    EXPECT_EQ(c10::elementSize(*scalar), dtype_itemsize(dtype)) << name;
    EXPECT_EQ(dtype_from_scalar_type(*scalar), dtype) << name;
  }
  test::expect_bad_input([] { dtype_from_scalar_type(c10::ScalarType::ComplexFloat); },
                         "cannot be stored in safetensors");
}

}  // namespace
}  // namespace sarqc

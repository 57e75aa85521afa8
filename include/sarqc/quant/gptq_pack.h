#pragma once
// GPTQ bit packing (docs/formats.md §5): each column of codes is one little-endian bit stream in
// which value k occupies bits [k·b, (k+1)·b), cut into int32 words. For b = 2, 4, 8 that is "value
// k in word k / (32/b) at bit (k mod (32/b))·b"; for b = 3 it is the 10|1|10|1|10 layout of 32
// values in 3 words.
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace sarqc {

// values: [rows, cols] integers in [0, 2^bits) (any integer dtype) -> int32 [rows·bits/32, cols],
// packed along dim 0. rows·bits must be a multiple of 32.
at::Tensor pack_rows(const at::Tensor& values, int bits);
at::Tensor unpack_rows(const at::Tensor& packed, int bits, int64_t rows);  // -> int32 [rows, cols]

// qweight = pack_rows(codesᵀ); qzeros = pack along dim 1 of stored zeros [G, m].
at::Tensor pack_qweight(const at::Tensor& codes /*[m, n]*/, int bits);
at::Tensor pack_qzeros(const at::Tensor& stored_zeros /*[G, m]*/, int bits);
at::Tensor unpack_qweight(const at::Tensor& qweight, int bits, int64_t in_features);  // [m, n]
at::Tensor unpack_qzeros(const at::Tensor& qzeros, int bits, int64_t out_features);   // [G, m]

}  // namespace sarqc

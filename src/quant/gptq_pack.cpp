#include "sarqc/quant/gptq_pack.h"

#include <ATen/ATen.h>

namespace sarqc {

at::Tensor pack_rows(const at::Tensor& values, int bits) {
  TORCH_CHECK(values.dim() == 2, "pack_rows: values must be 2-D, got ", values.sizes());
  const int64_t rows = values.size(0), cols = values.size(1);
  TORCH_CHECK((rows * bits) % 32 == 0, "pack_rows: ", rows, " rows of ", bits,
              " bits do not fill whole 32-bit words");
  const at::Tensor v = values.to(at::kCPU, at::kLong).contiguous();
  TORCH_CHECK(v.numel() == 0 || (v.min().item<int64_t>() >= 0 &&
                                 v.max().item<int64_t>() < (int64_t{1} << bits)),
              "pack_rows: values must lie in [0, ", (int64_t{1} << bits), ")");
  const int64_t words = rows * bits / 32;
  at::Tensor out = at::zeros({words, cols}, at::TensorOptions().dtype(at::kInt));
  const int64_t* in = v.data_ptr<int64_t>();
  auto* word = reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t bit = r * bits, w = bit / 32, shift = bit % 32;
    for (int64_t c = 0; c < cols; ++c) {
      const uint64_t value = static_cast<uint64_t>(in[r * cols + c]) << shift;
      word[w * cols + c] |= static_cast<uint32_t>(value);
      if (shift + bits > 32) word[(w + 1) * cols + c] |= static_cast<uint32_t>(value >> 32);
    }
  }
  return out;
}

at::Tensor unpack_rows(const at::Tensor& packed, int bits, int64_t rows) {
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kInt &&
                  packed.size(0) * 32 == rows * bits,
              "unpack_rows: expected int32 [", rows * bits / 32, ", cols], got ",
              packed.scalar_type(), " ", packed.sizes());
  const at::Tensor p = packed.to(at::kCPU).contiguous();
  const int64_t cols = p.size(1);
  at::Tensor out = at::empty({rows, cols}, at::TensorOptions().dtype(at::kInt));
  const auto* word = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  int32_t* o = out.data_ptr<int32_t>();
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t bit = r * bits, w = bit / 32, shift = bit % 32;
    for (int64_t c = 0; c < cols; ++c) {
      uint64_t pair = word[w * cols + c];
      if (shift + bits > 32) pair |= static_cast<uint64_t>(word[(w + 1) * cols + c]) << 32;
      o[r * cols + c] = static_cast<int32_t>((pair >> shift) & mask);
    }
  }
  return out;
}

at::Tensor pack_qweight(const at::Tensor& codes, int bits) { return pack_rows(codes.t(), bits); }

at::Tensor pack_qzeros(const at::Tensor& stored_zeros, int bits) {
  return pack_rows(stored_zeros.t(), bits).t().contiguous();
}

at::Tensor unpack_qweight(const at::Tensor& qweight, int bits, int64_t in_features) {
  return unpack_rows(qweight, bits, in_features).t().contiguous();
}

at::Tensor unpack_qzeros(const at::Tensor& qzeros, int bits, int64_t out_features) {
  return unpack_rows(qzeros.t().contiguous(), bits, out_features).t().contiguous();
}

}  // namespace sarqc

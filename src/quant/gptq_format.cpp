#include "sarqc/quant/gptq_format.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sarqc/quant/gptq_pack.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

int64_t group_count(int64_t in_features, int64_t group_size) {
  return group_size > 0 ? in_features / group_size : 1;
}

}  // namespace

GptqTensors to_gptq_tensors(const QuantizedLinear& q, bool v2) {
  TORCH_CHECK(v2 || q.grid.sym, "asymmetric grids are written only as gptq_v2");
  const at::Tensor stored = v2 ? q.zeros : q.zeros - 1;
  GptqTensors t;
  t.qweight = pack_qweight(q.codes, q.grid.bits);
  t.qzeros = pack_qzeros(stored, q.grid.bits);
  t.scales = q.scales.to(at::kCPU, at::kHalf).contiguous();
  t.g_idx = q.g_idx.to(at::kCPU, at::kInt).contiguous();
  return t;
}

at::Tensor dequantize_gptq(const GptqTensors& t, int bits, bool v2, int64_t n, int64_t m,
                           const std::string& name) {
  const int64_t G = t.scales.dim() == 2 ? t.scales.size(0) : -1;
  auto expect = [&](const at::Tensor& x, const char* what, std::vector<int64_t> shape) {
    if (x.sizes() != at::IntArrayRef(shape))
      throw_bad_input(fmt::format("{}.{}: shape [{}], expected [{}] for {} bits, in {} out {}",
                                  name, what, fmt::join(x.sizes().vec(), ", "),
                                  fmt::join(shape, ", "), bits, n, m));
  };
  expect(t.scales, "scales", {G, m});
  expect(t.qweight, "qweight", {n * bits / 32, m});
  expect(t.qzeros, "qzeros", {G, m * bits / 32});
  expect(t.g_idx, "g_idx", {n});
  if (t.qweight.scalar_type() != at::kInt || t.qzeros.scalar_type() != at::kInt)
    throw_bad_input(fmt::format("{}: qweight and qzeros must be I32", name));
  const at::Tensor g_idx = t.g_idx.to(at::kCPU, at::kLong);
  if (n > 0 && (g_idx.min().item<int64_t>() < 0 || g_idx.max().item<int64_t>() >= G))
    throw_bad_input(fmt::format("{}.g_idx: values must lie in [0, {})", name, G));
  const at::Tensor codes = unpack_qweight(t.qweight, bits, n).to(at::kFloat);  // [m, n]
  at::Tensor zeros = unpack_qzeros(t.qzeros, bits, m).to(at::kFloat);         // [G, m]
  if (!v2) zeros = zeros + 1;
  const at::Tensor scales = t.scales.to(at::kCPU, at::kFloat);
  return scales.index_select(0, g_idx).t() * (codes - zeros.index_select(0, g_idx).t());
}

std::vector<TensorSpec> gptq_tensor_specs(const std::string& name, int64_t n, int64_t m, int bits,
                                          int64_t group_size) {
  const int64_t G = group_count(n, group_size);
  return {{name + ".qweight", Dtype::I32, {n * bits / 32, m}},
          {name + ".qzeros", Dtype::I32, {G, m * bits / 32}},
          {name + ".scales", Dtype::F16, {G, m}},
          {name + ".g_idx", Dtype::I32, {n}}};
}

}  // namespace sarqc

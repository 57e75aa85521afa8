#include "sarqc/rounding/gptq.h"

#include <ATen/ATen.h>

namespace sarqc {

QuantizedLinear GptqRounder::round(const at::Tensor& target, const at::Tensor& metric,
                                   const QuantGrid& grid, const RoundingOptions& o) const {
  const int64_t m = target.size(0), n = target.size(1);
  TORCH_CHECK(target.dim() == 2 && metric.dim() == 2 && metric.size(0) == n &&
                  metric.size(1) == n,
              "gptq: target must be [out, in] and metric [in, in]; got ", target.sizes(), " and ",
              metric.sizes());
  const int64_t g = grid.group_size > 0 ? grid.group_size : -1;
  TORCH_CHECK(g < 0 || n % g == 0, "gptq: group size ", g, " does not divide in_features ", n);
  const int64_t maxq = grid.maxq();
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(target.device());

  const at::Tensor perm = o.act_order ? at::argsort(metric.diagonal(), /*dim=*/0, /*descending=*/true)
                                      : at::arange(n, long_opts);
  // Parameters fixed before any update: per row (g = -1), or per natural group (static groups).
  std::vector<GroupParams> fixed;
  if (g < 0) {
    fixed.push_back(find_params(target, grid));
  } else if (o.static_groups) {
    for (int64_t k = 0; k < n / g; ++k) fixed.push_back(find_params(target.narrow(1, k * g, g), grid));
  }
  at::Tensor T = target.index_select(1, perm).clone();
  const at::Tensor U = inverse_cholesky_upper(metric.index_select(0, perm).index_select(1, perm));

  at::Tensor codes = at::zeros({m, n}, target.options());
  std::vector<at::Tensor> scales, zeros;
  if (g < 0 || o.static_groups)
    for (const auto& p : fixed) scales.push_back(p.scale), zeros.push_back(p.zero);
  const auto perm_cpu = perm.to(at::kCPU);
  const int64_t* perm_ptr = perm_cpu.data_ptr<int64_t>();
  GroupParams params = g < 0 ? fixed[0] : GroupParams{};
  at::Tensor loss = at::zeros({}, target.options());
  const int64_t B = std::max<int64_t>(1, o.block_size);
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(i1 + B, n), count = i2 - i1;
    at::Tensor T1 = T.narrow(1, i1, count).clone();
    at::Tensor E1 = at::zeros_like(T1);
    for (int64_t j = i1; j < i2; ++j) {
      const int64_t i = j - i1;
      if (g > 0) {
        if (o.static_groups) {
          params = fixed[static_cast<size_t>(perm_ptr[j] / g)];
        } else if (j % g == 0) {
          // Current values of columns j .. j+g-1: in-block ones from T1, later ones from T.
          const int64_t in_block = std::min(g, count - i);
          at::Tensor cols = T1.narrow(1, i, in_block);
          if (in_block < g) cols = at::cat({cols, T.narrow(1, i2, g - in_block)}, 1);
          params = find_params(cols, grid);
          scales.push_back(params.scale);
          zeros.push_back(params.zero);
        }
      }
      const at::Tensor w = T1.select(1, i);
      const at::Tensor c = quantize_codes(w, params, maxq);
      codes.select(1, j).copy_(c);
      const at::Tensor e = (w - dequantize_codes(c, params)) / U[j][j];
      loss += e.pow(2).sum();
      T1.narrow(1, i, count - i) -= at::outer(e, U[j].narrow(0, j, count - i));
      E1.select(1, i).copy_(e);
    }
    if (i2 < n) T.narrow(1, i2, n - i2) -= at::matmul(E1, U.narrow(0, i1, count).narrow(1, i2, n - i2));
  }
  QuantizedLinear q = assemble_quantized(grid, codes, scales, zeros, perm,
                                         /*groups_in_processing_order=*/!o.static_groups);
  q.loss = loss.item<double>();
  return q;
}

}  // namespace sarqc

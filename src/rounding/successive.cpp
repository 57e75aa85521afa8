#include "sarqc/rounding/successive.h"

#include <ATen/ATen.h>

#include "sarqc/rounding/beam_search.h"
#include "sarqc/rounding/gptq.h"

namespace sarqc {

QuantizedLinear SuccessiveRounder::round(const at::Tensor& target, const at::Tensor& metric,
                                         const QuantGrid& grid, const RoundingOptions& o) const {
  return round_penalized(target, metric, grid, o, {});
}

QuantizedLinear SuccessiveRounder::round_penalized(const at::Tensor& target,
                                                   const at::Tensor& metric, const QuantGrid& grid,
                                                   const RoundingOptions& o,
                                                   const EntryPenalty& penalty) const {
  const int64_t m = target.size(0), n = target.size(1);
  TORCH_CHECK(target.dim() == 2 && metric.dim() == 2 && metric.size(0) == n && metric.size(1) == n,
              name(), ": target must be [out, in] and metric [in, in]; got ", target.sizes(),
              " and ", metric.sizes());
  const int64_t K = beam_ ? o.beam_width : 1;
  TORCH_CHECK(K >= 1, name(), ": beam width must be >= 1, got ", K);
  const int64_t g = grid.group_size > 0 ? grid.group_size : -1;
  TORCH_CHECK(g < 0 || n % g == 0, name(), ": group size ", g, " does not divide in_features ", n);
  const auto opts = target.options();
  const int64_t A = grid.maxq() + 1;

  // Decoded from the back: p is the processing order reversed.
  const at::Tensor p = processing_order(metric.diagonal(), g, o.order).flip(0);
  const at::Tensor Mp = metric.index_select(0, p).index_select(1, p);
  const at::Tensor L = cholesky_lower(Mp);
  const at::Tensor d2 = L.diagonal().pow(2);  // L_jj²
  at::Tensor Lu = L / L.diagonal().unsqueeze(0);
  Lu.diagonal().zero_();
  const at::Tensor Tp = target.index_select(1, p);
  const bool penalized = penalty.weight.defined();
  TORCH_CHECK(!penalized || (penalty.weight.sizes() == target.sizes() &&
                             penalty.anchor.sizes() == target.sizes()),
              name(), ": penalty weight and anchor must be ", target.sizes());
  const at::Tensor Pw = penalized ? penalty.weight.to(opts).index_select(1, p) : at::Tensor();
  const at::Tensor Pa = penalized ? penalty.anchor.to(opts).index_select(1, p) : at::Tensor();

  // Group parameters from the static target, as per-column scale/zero in processing order.
  std::vector<at::Tensor> scales, zeros;
  at::Tensor S = at::empty({m, n}, opts), Z = at::empty({m, n}, opts);
  if (g < 0) {
    const GroupParams gp = find_params(target, grid);
    scales.push_back(gp.scale), zeros.push_back(gp.zero);
    S.copy_(gp.scale.unsqueeze(1).expand({m, n})), Z.copy_(gp.zero.unsqueeze(1).expand({m, n}));
  } else if (o.static_groups) {
    for (int64_t k = 0; k < n / g; ++k) {
      const GroupParams gp = find_params(target.narrow(1, k * g, g), grid);
      scales.push_back(gp.scale), zeros.push_back(gp.zero);
    }
    const at::Tensor group_of = at::div(p, g, "floor");  // natural group of each position
    S = at::stack(scales, 1).index_select(1, group_of);
    Z = at::stack(zeros, 1).index_select(1, group_of);
  } else {
    for (int64_t k = 0; k < n / g; ++k) {  // contiguous groups in decoding order
      const GroupParams gp = find_params(Tp.narrow(1, k * g, g), grid);
      scales.push_back(gp.scale), zeros.push_back(gp.zero);
      S.narrow(1, k * g, g).copy_(gp.scale.unsqueeze(1).expand({m, g}));
      Z.narrow(1, k * g, g).copy_(gp.zero.unsqueeze(1).expand({m, g}));
    }
  }

  const int64_t B = std::max<int64_t>(1, o.block_size);
  at::Tensor codes_out = at::empty({m, n}, opts);
  double loss = 0;
  // On the CPU the fused kernel decodes every width fastest (at width 1 it is greedy decoding);
  // elsewhere width 1 takes the greedy loop below and wider beams the batched decoder.
  const bool fused = o.fused_cpu_beam && target.device().is_cpu() && A <= 256 && K <= 32767;
  if (!fused && K == 1 && o.greedy_fast_path) {
    // Greedy fast path: the nearest code is the beam's only survivor (tie rule 1), so keep the
    // corrected targets ŵ of the block's remaining columns and update them by one rank-1 step
    // per decided column, as GPTQ does.
    at::Tensor Q = at::zeros({m, n}, opts);
    at::Tensor err = at::zeros({m}, opts);  // Σ_j L_jj² (ŵ_j − q_j)² per row
    for (int64_t i2 = n; i2 > 0; i2 -= B) {
      const int64_t i1 = std::max<int64_t>(i2 - B, 0), count = i2 - i1;
      at::Tensor w_hat = Tp.narrow(1, i1, count).clone();
      if (i2 < n)
        w_hat += at::matmul(Tp.narrow(1, i2, n - i2) - Q.narrow(1, i2, n - i2),
                            Lu.narrow(0, i2, n - i2).narrow(1, i1, count));
      for (int64_t j = i2 - 1; j >= i1; --j) {
        const int64_t i = j - i1;
        const at::Tensor w = w_hat.select(1, i), sj = S.select(1, j), zj = Z.select(1, j);
        // The step cost's minimiser: ŵ itself, or pulled toward the original weight.
        const at::Tensor t =
            penalized ? (d2[j] * w + Pw.select(1, j) * Pa.select(1, j)) / (d2[j] + Pw.select(1, j))
                      : w;
        const at::Tensor code = at::clamp(at::round(t / sj) + zj, 0, A - 1);
        const at::Tensor q = sj * (code - zj);
        codes_out.select(1, j).copy_(code);
        Q.select(1, j).copy_(q);
        err += d2[j] * (w - q).pow(2);
        if (penalized) err += Pw.select(1, j) * (Pa.select(1, j) - q).pow(2);
        if (i > 0)
          w_hat.narrow(1, 0, i).add_(at::outer(Tp.select(1, j) - q, Lu[j].narrow(0, i1, i)));
      }
    }
    loss = err.sum().item<double>();
  } else {
    BeamSearchProblem bp;
    bp.target = Tp, bp.scale = S, bp.zero = Z, bp.lu = Lu, bp.d2 = d2;
    bp.penalty_weight = Pw, bp.penalty_anchor = Pa;
    bp.levels = A, bp.beam_width = K, bp.block_size = B;
    bp.chunk_rows = o.beam_rows, bp.budget_bytes = o.beam_budget_bytes;
    BeamSearchResult r = fused ? beam_search_cpu(bp) : beam_search_batched(bp);
    codes_out = r.codes;
    loss = r.loss;
  }
  QuantizedLinear q = assemble_quantized(grid, codes_out, scales, zeros, p,
                                         /*groups_in_processing_order=*/!o.static_groups);
  q.loss = loss;
  return q;
}

}  // namespace sarqc

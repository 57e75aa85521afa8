#include "sarqc/rounding/successive.h"

#include <ATen/ATen.h>

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

  // Ascending diag(M), decoded from the back: the largest-diag columns are decided first.
  const at::Tensor p = std::get<1>(at::sort(metric.diagonal(), /*stable=*/true, 0, false));
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
    for (int64_t k = 0; k < n / g; ++k) {  // contiguous groups in processing order
      const GroupParams gp = find_params(Tp.narrow(1, k * g, g), grid);
      scales.push_back(gp.scale), zeros.push_back(gp.zero);
      S.narrow(1, k * g, g).copy_(gp.scale.unsqueeze(1).expand({m, g}));
      Z.narrow(1, k * g, g).copy_(gp.zero.unsqueeze(1).expand({m, g}));
    }
  }

  const int64_t B = std::max<int64_t>(1, o.block_size);
  at::Tensor codes_out = at::empty({m, n}, opts);
  double loss = 0;
  if (K == 1 && o.greedy_fast_path) {
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
    // Per row: codes and their values [2K, n], corrected targets [K, B], candidates [K, 3K].
    const int64_t row_bytes = K * (2 * n + B + 3 * K) * static_cast<int64_t>(target.element_size());
    const int64_t chunk =
        std::clamp<int64_t>(o.beam_budget_bytes / std::max<int64_t>(row_bytes, 1), 1, m);
    // Candidates per parent: only its W nearest codes can enter the top K (methods.md §6.2).
    const int64_t Wc = std::min(K, A);
    const at::Tensor rank = at::arange(Wc, opts).view({1, 1, Wc});
    for (int64_t r0 = 0; r0 < m; r0 += chunk) {
      const int64_t R = std::min(chunk, m - r0);
      const at::Tensor T = Tp.narrow(0, r0, R), s = S.narrow(0, r0, R), z = Z.narrow(0, r0, R);
      const at::Tensor pw = penalized ? Pw.narrow(0, r0, R) : at::Tensor();
      const at::Tensor pa = penalized ? Pa.narrow(0, r0, R) : at::Tensor();
      // Decisions right of the current block, indexed by the beams alive at the block's start.
      at::Tensor codes = at::zeros({R, K, n}, opts);
      at::Tensor deq = at::zeros({R, K, n}, opts);  // s · (code − z)
      at::Tensor score = at::full({R, K}, std::numeric_limits<double>::infinity(), opts);
      score.select(1, 0).zero_();
      for (int64_t i2 = n; i2 > 0; i2 -= B) {
        const int64_t i1 = std::max<int64_t>(i2 - B, 0), count = i2 - i1;
        // ŵ of the block's columns given each beam's decisions right of the block (one GEMM),
        // then corrected by one rank-1 update per decided column.
        at::Tensor w_hat = T.narrow(1, i1, count).unsqueeze(1).expand({R, K, count}).clone();
        if (i2 < n)
          w_hat += at::matmul(T.narrow(1, i2, n - i2).unsqueeze(1) - deq.narrow(2, i2, n - i2),
                              Lu.narrow(0, i2, n - i2).narrow(1, i1, count));
        std::vector<at::Tensor> parents(static_cast<size_t>(count)),
            chosen(static_cast<size_t>(count));
        for (int64_t j = i2 - 1; j >= i1; --j) {
          const int64_t i = j - i1;
          const at::Tensor sj = s.select(1, j).unsqueeze(1), zj = z.select(1, j).unsqueeze(1);
          const at::Tensor v = w_hat.select(2, i) / sj;  // in grid steps, [R, K]
          // The step cost's minimiser in grid steps (pulled toward the original weight when
          // penalised); its nearest code is the greedy choice.
          at::Tensor center = v;
          if (penalized) {
            const at::Tensor pwj = pw.select(1, j).unsqueeze(1), paj = pa.select(1, j).unsqueeze(1);
            center = (d2[j] * w_hat.select(2, i) + pwj * paj) / (d2[j] + pwj) / sj;
          }
          const at::Tensor nearest = at::clamp(at::round(center) + zj, 0, A - 1);
          // The Wc nearest codes, nearest first, then ascending (the tie order of §6.2).
          at::Tensor lo = at::ceil(center + zj - Wc / 2.0).clamp(0, A - Wc);
          lo = at::minimum(at::maximum(lo, nearest - (Wc - 1)), nearest).unsqueeze(2);
          const at::Tensor others =
              lo + rank - 1 + (lo + rank - 1 >= nearest.unsqueeze(2)).to(opts.dtype());
          const at::Tensor cand_code = at::where(rank == 0, nearest.unsqueeze(2), others);
          const at::Tensor level = cand_code - zj.unsqueeze(2);
          at::Tensor cost =
              score.unsqueeze(2) + (v.unsqueeze(2) - level).pow(2) * (d2[j] * sj * sj).unsqueeze(2);
          if (penalized)
            cost = cost + pw.select(1, j).view({R, 1, 1}) *
                              (pa.select(1, j).view({R, 1, 1}) - sj.unsqueeze(2) * level).pow(2);
          const at::Tensor flat = cost.reshape({R, K * Wc});
          const at::Tensor keep =
              std::get<1>(at::sort(flat, /*stable=*/true, 1, false)).narrow(1, 0, K);
          const at::Tensor parent = at::div(keep, Wc, "floor");
          const at::Tensor code = cand_code.reshape({R, K * Wc}).gather(1, keep);
          score = flat.gather(1, keep);
          parents[static_cast<size_t>(i)] = parent;
          chosen[static_cast<size_t>(i)] = code;
          if (i == 0) break;
          w_hat = w_hat.narrow(2, 0, i).gather(1, parent.unsqueeze(2).expand({R, K, i}));
          const at::Tensor q = sj * (code - zj);
          const at::Tensor residual = T.select(1, j).unsqueeze(1) - q;  // [R, K]
          w_hat += residual.unsqueeze(2) * Lu[j].narrow(0, i1, i).view({1, 1, i});
        }
        // Backtrack the block: beam b's code at each column, and which start-of-block beam it
        // descends from.
        at::Tensor beam = at::arange(K, opts.dtype(at::kLong)).unsqueeze(0).expand({R, K});
        at::Tensor block_codes = at::empty({R, K, count}, opts);
        for (int64_t i = 0; i < count; ++i) {
          block_codes.select(2, i).copy_(chosen[static_cast<size_t>(i)].gather(1, beam));
          beam = parents[static_cast<size_t>(i)].gather(1, beam);
        }
        if (i2 < n) {
          const at::Tensor idx = beam.unsqueeze(2).expand({R, K, n - i2});
          codes.narrow(2, i2, n - i2).copy_(codes.narrow(2, i2, n - i2).gather(1, idx));
          deq.narrow(2, i2, n - i2).copy_(deq.narrow(2, i2, n - i2).gather(1, idx));
        }
        codes.narrow(2, i1, count).copy_(block_codes);
        deq.narrow(2, i1, count)
            .copy_(s.narrow(1, i1, count).unsqueeze(1) *
                   (block_codes - z.narrow(1, i1, count).unsqueeze(1)));
      }
      const at::Tensor best = std::get<1>(score.min(1));  // [R]
      codes_out.narrow(0, r0, R).copy_(
          codes.gather(1, best.view({R, 1, 1}).expand({R, 1, n})).squeeze(1));
      loss += std::get<0>(score.min(1)).sum().item<double>();
    }
  }
  QuantizedLinear q = assemble_quantized(grid, codes_out, scales, zeros, p,
                                         /*groups_in_processing_order=*/!o.static_groups);
  q.loss = loss;
  return q;
}

}  // namespace sarqc

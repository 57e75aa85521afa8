#include "sarqc/rounding/beam_search.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace sarqc {

int64_t beam_chunk_rows(const BeamSearchProblem& p, int64_t row_bytes) {
  const int64_t m = p.target.size(0);
  if (p.chunk_rows > 0) return std::min(p.chunk_rows, m);
  return std::clamp<int64_t>(p.budget_bytes / std::max<int64_t>(row_bytes, 1), 1, m);
}

BeamSearchResult beam_search_batched(const BeamSearchProblem& p) {
  const at::Tensor& Tp = p.target;
  const int64_t m = Tp.size(0), n = Tp.size(1), K = p.beam_width, A = p.levels;
  const int64_t B = std::max<int64_t>(1, p.block_size);
  const auto opts = Tp.options();
  const bool penalized = p.penalty_weight.defined();
  // Per row: codes and their values [2K, n], corrected targets [K, B], candidates [K, 3K].
  const int64_t chunk =
      beam_chunk_rows(p, K * (2 * n + B + 3 * K) * static_cast<int64_t>(Tp.element_size()));
  // Candidates per parent: only its Wc nearest codes can enter the top K (docs/methods.md §6.2).
  const int64_t Wc = std::min(K, A);
  const at::Tensor rank = at::arange(Wc, opts).view({1, 1, Wc});
  BeamSearchResult result{at::empty({m, n}, opts), 0.0};
  for (int64_t r0 = 0; r0 < m; r0 += chunk) {
    const int64_t R = std::min(chunk, m - r0);
    const at::Tensor T = Tp.narrow(0, r0, R), s = p.scale.narrow(0, r0, R),
                     z = p.zero.narrow(0, r0, R);
    const at::Tensor pw = penalized ? p.penalty_weight.narrow(0, r0, R) : at::Tensor();
    const at::Tensor pa = penalized ? p.penalty_anchor.narrow(0, r0, R) : at::Tensor();
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
                            p.lu.narrow(0, i2, n - i2).narrow(1, i1, count));
      std::vector<at::Tensor> parents(static_cast<size_t>(count)),
          chosen(static_cast<size_t>(count));
      for (int64_t j = i2 - 1; j >= i1; --j) {
        const int64_t i = j - i1;
        const at::Tensor d2j = p.d2[j];
        const at::Tensor sj = s.select(1, j).unsqueeze(1), zj = z.select(1, j).unsqueeze(1);
        const at::Tensor v = w_hat.select(2, i) / sj;  // in grid steps, [R, K]
        // The step cost's minimiser in grid steps (pulled toward the original weight when
        // penalised); its nearest code is the greedy choice.
        at::Tensor center = v;
        if (penalized) {
          const at::Tensor pwj = pw.select(1, j).unsqueeze(1), paj = pa.select(1, j).unsqueeze(1);
          center = (d2j * w_hat.select(2, i) + pwj * paj) / (d2j + pwj) / sj;
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
            score.unsqueeze(2) + (v.unsqueeze(2) - level).pow(2) * (d2j * sj * sj).unsqueeze(2);
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
        w_hat += residual.unsqueeze(2) * p.lu[j].narrow(0, i1, i).view({1, 1, i});
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
    const auto best = score.min(1);  // [R]
    result.codes.narrow(0, r0, R).copy_(
        codes.gather(1, std::get<1>(best).view({R, 1, 1}).expand({R, 1, n})).squeeze(1));
    result.loss += std::get<0>(best).sum().item<double>();
  }
  return result;
}

}  // namespace sarqc

// The fused CPU beam decoder. Same decisions as beam_search_batched, organised for speed:
// - Only the best beam's corrected targets come from the block GEMM (as in greedy decoding);
//   another beam differs from it only in the columns where their decisions differ, which are
//   found by walking both back-pointer chains to their common ancestor (usually a few columns).
// - Within a block each row keeps K corrected-target vectors; selecting a parent and applying its
//   rank-1 correction is one fused pass per surviving beam.
// - Beams are stored as back-pointers and codes per column, so pruning copies no history.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "sarqc/rounding/beam_search.h"

namespace sarqc {
namespace {

using BeamIndex = int16_t;  // beam width ≤ 32767
using Code = uint8_t;       // ≤ 256 levels

// One extension of a beam: its cost, the beam it extends, the code it appends.
struct Candidate {
  double cost;
  int64_t parent;
  int64_t code;
};

template <typename scalar_t>
class ChunkDecoder {
 public:
  ChunkDecoder(const BeamSearchProblem& p, int64_t r0, int64_t R)
      : p_(p),
        r0_(r0),
        R_(R),
        n_(p.target.size(1)),
        K_(p.beam_width),
        Wc_(std::min(p.beam_width, p.levels)),
        A_(p.levels),
        T_(p.target.data_ptr<scalar_t>()),
        S_(p.scale.data_ptr<scalar_t>()),
        Z_(p.zero.data_ptr<scalar_t>()),
        Lu_(p.lu.data_ptr<scalar_t>()),
        d2_(p.d2.data_ptr<scalar_t>()),
        Pw_(p.penalty_weight.defined() ? p.penalty_weight.data_ptr<scalar_t>() : nullptr),
        Pa_(p.penalty_anchor.defined() ? p.penalty_anchor.data_ptr<scalar_t>() : nullptr),
        back_(static_cast<size_t>(R * n_ * K_)),
        code_(back_.size()),
        path_(static_cast<size_t>(R * n_), BeamIndex{-1}),
        score_(static_cast<size_t>(R * K_), std::numeric_limits<double>::infinity()),
        resid_(at::zeros({R, n_}, p.target.options())) {
    for (int64_t r = 0; r < R; ++r) score_[static_cast<size_t>(r * K_)] = 0;
  }

  // Decodes all columns, writes the best beam's codes into `codes` rows [r0, r0 + R), returns
  // the summed best scores.
  double run(at::Tensor& codes) {
    const int64_t B = std::max<int64_t>(1, p_.block_size);
    for (int64_t i2 = n_; i2 > 0; i2 -= B) {
      const int64_t i1 = std::max<int64_t>(i2 - B, 0);
      // The best beam's corrected targets for the block: W_ref + (W_ref − Q_best) · Lu.
      at::Tensor G = p_.target.narrow(0, r0_, R_).narrow(1, i1, i2 - i1);
      if (i2 < n_)
        G = at::addmm(G, resid_.narrow(1, i2, n_ - i2),
                      p_.lu.narrow(0, i2, n_ - i2).narrow(1, i1, i2 - i1));
      G = G.contiguous();
      const scalar_t* g = G.data_ptr<scalar_t>();
      at::parallel_for(0, R_, 4, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> w(static_cast<size_t>(K_ * B)), nw(w.size());
        std::vector<Candidate> best(static_cast<size_t>(K_));
        for (int64_t r = begin; r < end; ++r)
          decode_block(r, i1, i2, g + r * (i2 - i1), w, nw, best);
      });
    }
    scalar_t* out = codes.data_ptr<scalar_t>();
    double loss = 0;
    for (int64_t r = 0; r < R_; ++r) {
      BeamIndex b = 0;
      for (int64_t c = 0; c < n_; ++c) {
        out[(r0_ + r) * n_ + c] = static_cast<scalar_t>(code_[at(r, c, b)]);
        b = back_[at(r, c, b)];
      }
      loss += score_[static_cast<size_t>(r * K_)];
    }
    return loss;
  }

 private:
  size_t at(int64_t r, int64_t c, int64_t k) const {
    return static_cast<size_t>((r * n_ + c) * K_ + k);
  }

  void decode_block(int64_t r, int64_t i1, int64_t i2, const scalar_t* g, std::vector<scalar_t>& w,
                    std::vector<scalar_t>& nw, std::vector<Candidate>& best) {
    const int64_t count = i2 - i1, row = (r0_ + r) * n_;
    double* score = &score_[static_cast<size_t>(r * K_)];
    // Each live beam's corrected targets: the best beam's (beam 0's), plus the difference of
    // their decisions since their common ancestor.
    for (int64_t k = 0; k < K_; ++k) {
      scalar_t* wk = w.data() + k * count;
      std::copy(g, g + count, wk);
      if (k == 0 || std::isinf(score[k])) continue;
      int64_t bk = k, b0 = 0;
      for (int64_t c = i2; c < n_ && bk != b0; ++c) {
        const Code ck = code_[at(r, c, bk)], c0 = code_[at(r, c, b0)];
        if (ck != c0) {
          const scalar_t delta = S_[row + c] * (static_cast<scalar_t>(c0) - ck);
          const scalar_t* lu = Lu_ + c * n_ + i1;
          for (int64_t t = 0; t < count; ++t) wk[t] += delta * lu[t];
        }
        bk = back_[at(r, c, bk)];
        b0 = back_[at(r, c, b0)];
      }
    }
    for (int64_t j = i2 - 1; j >= i1; --j) {
      const int64_t i = j - i1;
      const double sj = S_[row + j], zj = Z_[row + j], d2 = d2_[j];
      const double pw = Pw_ ? double(Pw_[row + j]) : 0.0, pa = Pa_ ? double(Pa_[row + j]) : 0.0;
      // The K cheapest of the K·Wc candidates in a stable order (parent, then rank).
      int64_t filled = 0;
      for (int64_t k = 0; k < K_; ++k) {
        const double wv = w[static_cast<size_t>(k * count + i)], v = wv / sj;
        const double center = Pw_ ? (d2 * wv + pw * pa) / (d2 + pw) / sj : v;
        const double nearest = std::clamp(std::nearbyint(center) + zj, 0.0, double(A_ - 1));
        double lo = std::clamp(std::ceil(center + zj - Wc_ / 2.0), 0.0, double(A_ - Wc_));
        lo = std::min(std::max(lo, nearest - double(Wc_ - 1)), nearest);
        for (int64_t rank = 0; rank < Wc_; ++rank) {
          double code = nearest;
          if (rank > 0) {
            code = lo + double(rank - 1);
            if (code >= nearest) code += 1;
          }
          const double level = code - zj, e = v - level;
          double c = score[k] + e * e * (d2 * sj * sj);
          if (Pw_) c += pw * (pa - sj * level) * (pa - sj * level);
          int64_t pos;
          if (filled < K_) {
            pos = filled++;
          } else if (c < best[static_cast<size_t>(K_ - 1)].cost) {
            pos = K_ - 1;
          } else {
            continue;
          }
          for (; pos > 0 && c < best[static_cast<size_t>(pos - 1)].cost; --pos)
            best[static_cast<size_t>(pos)] = best[static_cast<size_t>(pos - 1)];
          best[static_cast<size_t>(pos)] = {c, k, static_cast<int64_t>(code)};
        }
      }
      const scalar_t tj = T_[row + j];
      const scalar_t* lu = Lu_ + j * n_ + i1;
      for (int64_t k = 0; k < K_; ++k) {
        const auto [cost, parent, code] = best[static_cast<size_t>(k)];
        score[k] = cost;
        back_[at(r, j, k)] = static_cast<BeamIndex>(parent);
        code_[at(r, j, k)] = static_cast<Code>(code);
        if (i == 0) continue;
        // Fused gather + rank-1 correction: ŵ_k ← ŵ_parent + (W_ref_j − q) · Lu[j, :i].
        const scalar_t res = tj - static_cast<scalar_t>(sj * (double(code) - zj));
        const scalar_t* src = w.data() + parent * count;
        scalar_t* dst = nw.data() + k * count;
        for (int64_t t = 0; t < i; ++t) dst[t] = src[t] + res * lu[t];
      }
      std::swap(w, nw);
    }
    // Materialise the best beam's path (its residuals feed the next block's GEMM), back to where
    // it joins the previously materialised path.
    scalar_t* resid = resid_.data_ptr<scalar_t>() + r * n_;
    BeamIndex b = 0;
    for (int64_t c = i1; c < n_; ++c) {
      BeamIndex& on_path = path_[static_cast<size_t>(r * n_ + c)];
      if (c >= i2 && on_path == b) break;
      on_path = b;
      resid[c] =
          T_[row + c] - S_[row + c] * (static_cast<scalar_t>(code_[at(r, c, b)]) - Z_[row + c]);
      b = back_[at(r, c, b)];
    }
  }

  const BeamSearchProblem& p_;
  const int64_t r0_, R_, n_, K_, Wc_, A_;
  const scalar_t *T_, *S_, *Z_, *Lu_, *d2_, *Pw_, *Pa_;
  std::vector<BeamIndex> back_;  // [R, n, K] the parent (beam index after column c + 1)
  std::vector<Code> code_;       // [R, n, K]
  std::vector<BeamIndex> path_;  // [R, n] beam index of the materialised best path
  std::vector<double> score_;    // [R, K] ascending: beam 0 is the best
  at::Tensor resid_;             // [R, n] W_ref − Q along the materialised path
};

}  // namespace

BeamSearchResult beam_search_cpu(const BeamSearchProblem& p) {
  TORCH_CHECK(p.target.device().is_cpu(), "beam_search_cpu: target must be on the CPU");
  TORCH_CHECK(p.beam_width >= 1 && p.beam_width <= std::numeric_limits<BeamIndex>::max(),
              "beam_search_cpu: beam width must be in [1, 32767], got ", p.beam_width);
  TORCH_CHECK(p.levels >= 2 && p.levels <= 256, "beam_search_cpu: levels must be in [2, 256]");
  BeamSearchProblem c = p;
  for (at::Tensor* t :
       {&c.target, &c.scale, &c.zero, &c.lu, &c.d2, &c.penalty_weight, &c.penalty_anchor})
    if (t->defined()) *t = t->contiguous();
  const int64_t m = c.target.size(0), n = c.target.size(1);
  const int64_t row_bytes =
      n * (c.beam_width * 3 + 2 + static_cast<int64_t>(c.target.element_size()));
  const int64_t chunk = beam_chunk_rows(c, row_bytes);
  BeamSearchResult result{at::empty({m, n}, c.target.options()), 0.0};
  AT_DISPATCH_FLOATING_TYPES(c.target.scalar_type(), "beam_search_cpu", [&] {
    for (int64_t r0 = 0; r0 < m; r0 += chunk)
      result.loss += ChunkDecoder<scalar_t>(c, r0, std::min(chunk, m - r0)).run(result.codes);
  });
  return result;
}

}  // namespace sarqc

#pragma once
// The beam decoder behind the "successive" (width 1) and "beam" backends (docs/methods.md §6.2), on
// a problem already put in processing order by SuccessiveRounder. Two implementations with the
// same tie rules: a batched one made of ATen ops (any device) and a fused per-row kernel for
// CPU tensors.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sarqc {

struct BeamSearchProblem {
  at::Tensor target;          // [m, n] W_ref, columns in processing order
  at::Tensor scale, zero;     // [m, n] each entry's group parameters
  at::Tensor lu;              // [n, n] L / diag(L) with a zero diagonal (L: lower Cholesky of M)
  at::Tensor d2;              // [n] L_jj²
  at::Tensor penalty_weight;  // [m, n] or undefined (element-wise drift penalty)
  at::Tensor penalty_anchor;  // [m, n] or undefined
  int64_t levels = 0;         // 2^bits
  int64_t beam_width = 1;
  int64_t block_size = 128;
  int64_t chunk_rows = 0;  // rows decoded together; 0 = as many as the memory budget allows
  int64_t budget_bytes = int64_t{256} << 20;
};

struct BeamSearchResult {
  at::Tensor codes;  // [m, n] the best beam's codes, in the target's dtype
  double loss = 0;   // Σ over rows of the best beam's score
};

// Rows decoded per chunk for a per-row state of `row_bytes`.
int64_t beam_chunk_rows(const BeamSearchProblem& p, int64_t row_bytes);

BeamSearchResult beam_search_batched(const BeamSearchProblem& p);
BeamSearchResult beam_search_cpu(const BeamSearchProblem& p);

}  // namespace sarqc

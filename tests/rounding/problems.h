#pragma once
// Random fp64 rounding problems shared by the backend tests: m × n weights and a damped Gram
// matrix (2/N)·X Xᵀ of correlated inputs (docs/methods.md §9: "random fp64 matrices").
#include <cstdint>

#include <ATen/ATen.h>

namespace sarqc::test {

struct RoundingProblem {
  at::Tensor W, H;
};

inline RoundingProblem make_rounding_problem(int64_t m, int64_t n, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor mix = at::randn({n, n}, at::kDouble);
  const at::Tensor X = at::matmul(mix, at::randn({n, 200}, at::kDouble));
  at::Tensor H = 2.0 / 200 * at::matmul(X, X.t());
  H += 0.01 * H.diagonal().mean() * at::eye(n, at::kDouble);
  return {at::randn({m, n}, at::kDouble), H};
}

}  // namespace sarqc::test

#pragma once
// Checked Cholesky factorizations of a metric M: every failure (not positive definite, or
// non-finite factors) is FactorizationFailed, which the pipeline answers by raising the damping
// (docs/methods.md §4). Objectives and backends factor M only through these.
#include <ATen/core/Tensor.h>

#include "sarqc/rounding/rounder.h"

namespace sarqc {

// L with M = L Lᵀ (lower).
at::Tensor cholesky_lower(const at::Tensor& metric);

// U with M⁻¹ = Uᵀ U (upper), computed as chol_upper(cholesky_inverse(chol(M))).
at::Tensor inverse_cholesky_upper(const at::Tensor& metric);

}  // namespace sarqc

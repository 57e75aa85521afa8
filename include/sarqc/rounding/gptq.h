#pragma once
#include "sarqc/rounding/cholesky.h"
#include "sarqc/rounding/rounder.h"

namespace sarqc {

// GPTQ (Frantar et al., arXiv 2210.17323, Algorithm 1; docs/methods.md §4): columns quantized one
// at a time in processing order, each rounding error spread over the remaining columns, with lazy
// block updates; act-order and static groups as options. The error feedback comes from one Cholesky
// factor of M in reversed processing order (U⁻¹ of the reference's U = chol(M⁻¹), docs/methods.md
// §9), so no inverse is formed; a fused per-row kernel runs the blocks on the CPU. Throws
// FactorizationFailed when M cannot be factored.
class GptqRounder : public Rounder {
 public:
  std::string name() const override { return "gptq"; }
  QuantizedLinear round(const at::Tensor& target, const at::Tensor& metric, const QuantGrid& grid,
                        const RoundingOptions& options) const override;
};

}  // namespace sarqc

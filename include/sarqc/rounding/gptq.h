#pragma once
#include "sarqc/rounding/cholesky.h"
#include "sarqc/rounding/rounder.h"

namespace sarqc {

// GPTQ (methods.md §4): columns quantized one at a time in processing order, each rounding error
// spread over the remaining columns through the upper Cholesky factor U of M⁻¹, with lazy
// block updates; act-order and static groups as options. Throws FactorizationFailed when
// M cannot be factored.
class GptqRounder : public Rounder {
 public:
  std::string name() const override { return "gptq"; }
  QuantizedLinear round(const at::Tensor& target, const at::Tensor& metric, const QuantGrid& grid,
                        const RoundingOptions& options) const override;
};

}  // namespace sarqc

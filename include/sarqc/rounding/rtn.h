#pragma once
#include "sarqc/rounding/rounder.h"

namespace sarqc {

// Round to nearest (docs/methods.md §3): find_params per (row, group) of the target, no metric.
class RtnRounder : public Rounder {
 public:
  std::string name() const override { return "rtn"; }
  bool needs_metric() const override { return false; }
  QuantizedLinear round(const at::Tensor& target, const at::Tensor& metric, const QuantGrid& grid,
                        const RoundingOptions& options) const override;
};

}  // namespace sarqc

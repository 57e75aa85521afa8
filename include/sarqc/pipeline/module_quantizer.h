#pragma once
// One linear module from its group's statistics to integer codes: objective → rounding backend,
// the damping retry when the metric cannot be factored (docs/methods.md §4), and the RTN fallbacks
// (no calibration, starved MoE experts, exhausted retries).
#include <cstdint>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/calib/group_statistics.h"
#include "sarqc/model/layout.h"
#include "sarqc/pipeline/plan.h"
#include "sarqc/pipeline/report.h"
#include "sarqc/quant/quantized_linear.h"

namespace sarqc {

struct QuantizeOptions;

struct QuantizedModule {
  QuantizedLinear q;
  at::Tensor weight;  // q dequantized (fp32), computed once for the layer and the objective
  // What the objective measured on the result (Objective::measure_result), for the caller to
  // add in module order (Objective::add_result).
  std::vector<double> measured;
};

class ModuleQuantizer {
 public:
  // `plan` and `options` must outlive the quantizer. Routed experts with fewer calibration
  // tokens than `starved_below` follow options.moe_policy.
  ModuleQuantizer(const QuantizePlan& plan, const QuantizeOptions& options, int64_t starved_below);

  // W: the module's fp32 weight [out, in]; stats: its group's statistics (null when the plan
  // does not calibrate). Fills record's method, reason, tokens, loss, damping and α.
  QuantizedModule quantize(const LinearModule& module, int64_t layer, const at::Tensor& W,
                           const GroupStatistics* stats, ModuleRecord& record) const;

 private:
  // λ of a sarqc objective under the settings' lambda_mode (objective/lambda_search.h); fold0
  // and fold1: the held-out folds of `gram` (null without a split).
  LambdaChoice choose_lambda(const LinearModule& module, int64_t layer, const at::Tensor& W,
                             const GramAccumulator& gram, const GramAccumulator* fold0,
                             const GramAccumulator* fold1) const;
  std::optional<QuantizedModule> round_with_damping(const LinearModule& module, int64_t layer,
                                                    const at::Tensor& W,
                                                    const GramAccumulator& gram,
                                                    const LambdaChoice& lambda,
                                                    ModuleRecord& record) const;
  const QuantizePlan* plan_;
  const QuantizeOptions* options_;
  int64_t starved_below_;
};

// tr(T M Tᵀ) from at most `rows` evenly spaced rows of T, scaled to all of them (exact when T
// has no more rows).
double sampled_trace(const at::Tensor& T, const at::Tensor& M, int64_t rows = 256);

}  // namespace sarqc

#include "sarqc/pipeline/module_quantizer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "sarqc/calib/module_groups.h"
#include "sarqc/objective/lambda_search.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/rounding/rtn.h"
#include "sarqc/util/fault_point.h"

namespace sarqc {

double sampled_trace(const at::Tensor& T, const at::Tensor& M, int64_t rows) {
  const int64_t m = T.size(0);
  at::Tensor sample = T;
  if (m > rows) {
    const at::Tensor index = at::linspace(0, static_cast<double>(m - 1), rows,
                                          T.options().dtype(at::kDouble))
                                 .round()
                                 .to(at::kLong);
    sample = T.index_select(0, index);
  }
  const double trace = (at::matmul(sample, M) * sample).sum().item<double>();
  return trace * static_cast<double>(m) / static_cast<double>(sample.size(0));
}

ModuleQuantizer::ModuleQuantizer(const QuantizePlan& plan, const QuantizeOptions& options,
                                 int64_t starved_below)
    : plan_(&plan), options_(&options), starved_below_(starved_below) {}

LambdaChoice ModuleQuantizer::choose_lambda(const LinearModule& m, int64_t layer,
                                            const at::Tensor& W, const GramAccumulator& gram,
                                            const GramAccumulator* fold0,
                                            const GramAccumulator* fold1) const {
  const ObjectiveSettings& settings = plan_->objective_settings;
  const Objective& objective = *plan_->objective;
  LambdaChoice c;
  if (!objective.uses_lambda()) return c;
  c.mode = settings.lambda_mode;
  c.saliency = settings.saliency;
  c.lambda = settings.lambda_rel;
  if (c.mode == "fixed") return c;
  if (c.mode == "lw") {
    c.lw_lambda = c.lambda = ledoit_wolf_lambda(gram);
    return c;
  }
  const QuantizeOptions& o = *options_;
  const std::string role(linear_role_name(m.role));
  // Rows are rounded independently against the same metric, and the held-out loss is a sum over
  // rows: the search fits at most kLambdaSearchRows evenly spaced rows (for a module of 5632
  // rows, an eleventh of the sweeps; the factorizations remain).
  at::Tensor rows = W;
  if (W.size(0) > kLambdaSearchRows)
    rows = W.index_select(0, at::linspace(0, static_cast<double>(W.size(0) - 1), kLambdaSearchRows,
                                          W.options().dtype(at::kDouble))
                                 .round()
                                 .to(at::kLong));
  // One fit: the objective with this λ on a fold's statistics, then the backend.
  const auto fit = [&](const GramAccumulator& fold, double lambda) {
    const PreparedMetric prep =
        prepare_metric(fold.matrix(), rows, o.damp, m.name, o.compute.dtype);
    ObjectiveInput input{prep.weight,     prep.damped,
                         &fold,           prep.mean_diag,
                         layer,           role,
                         plan_->grid.group_size, plan_->rounder->supports_entry_penalty()};
    input.lambda_rel = lambda;
    const ObjectiveOutput out = objective.build(input);
    const QuantizedLinear q = plan_->rounder->round_penalized(out.target, out.metric, plan_->grid,
                                                              o.rounding_options, out.penalty);
    return HeldOutFit{q.dequantize(),
                      objective.needs_fp_stream() ? out.alpha.value_or(1.0) : 0.0};
  };
  c = search_lambda(rows, gram, fold0, fold1, fit);
  c.saliency = settings.saliency;
  return c;
}

std::optional<QuantizedModule> ModuleQuantizer::round_with_damping(const LinearModule& m,
                                                                   int64_t layer,
                                                                   const at::Tensor& W,
                                                                   const GramAccumulator& gram,
                                                                   const LambdaChoice& lambda,
                                                                   ModuleRecord& rec) const {
  const QuantizeOptions& o = *options_;
  const Rounder& rounder = *plan_->rounder;
  const Objective& objective = *plan_->objective;
  double damp = o.damp, tried = o.damp;
  for (int attempt = 0; attempt <= o.max_damp_retries; ++attempt) {
    tried = damp;
    const PreparedMetric prep = prepare_metric(gram.matrix(), W, damp, m.name, o.compute.dtype);
    const ObjectiveInput input{prep.weight,     prep.damped,
                               &gram,           prep.mean_diag,
                               layer,           std::string(linear_role_name(m.role)),
                               plan_->grid.group_size, rounder.supports_entry_penalty()};
    ObjectiveInput chosen = input;
    if (!lambda.mode.empty()) chosen.lambda_rel = lambda.lambda;
    try {
      // The objective factors M too (the interp target): its failures retry like the backend's.
      const ObjectiveOutput target = objective.build(chosen);
      QuantizedLinear q = rounder.round_penalized(target.target, target.metric, plan_->grid,
                                                  o.rounding_options, target.penalty);
      const double scale = sampled_trace(target.target, target.metric);
      rec.relative_loss = scale > 0 ? q.loss / scale : 0;
      rec.dead_columns = prep.dead_columns;
      rec.damp = damp;
      rec.method = rounder.name();
      rec.alpha = target.alpha.value_or(-1);
      at::Tensor weight = q.dequantize();
      std::vector<double> measured = objective.measure_result(chosen, weight);
      fault_point("rounding");  // rounded and measured, not yet written (resume tests)
      return QuantizedModule{std::move(q), std::move(weight), std::move(measured)};
    } catch (const FactorizationFailed& e) {
      damp += 0.01;
      if (attempt < o.max_damp_retries)
        spdlog::warn("{}: {} at percdamp {:.2f}; retrying with {:.2f}", m.name, e.what(), tried,
                     damp);
    }
  }
  rec.reason = fmt::format("factorization failed up to percdamp {:.2f}", tried);
  spdlog::error("{}: {}; falling back to RTN", m.name, rec.reason);
  return std::nullopt;
}

QuantizedModule ModuleQuantizer::quantize(const LinearModule& m, int64_t layer,
                                          const at::Tensor& W, const GroupStatistics* stats,
                                          ModuleRecord& rec) const {
  const bool calibrate = plan_->calibrate;
  const bool all_tokens = options_->moe_policy == "all-tokens";
  std::string key = input_key(m);
  const GramAccumulator* gram = calibrate && stats ? stats->find(key) : nullptr;
  rec.tokens = gram ? gram->tokens() : 0;
  bool starved = calibrate && (gram == nullptr || (m.expert >= 0 && rec.tokens < starved_below_));
  if (starved && all_tokens) {
    key = GroupStatistics::all_tokens_key(key);
    gram = stats ? stats->find(key) : nullptr;
    rec.reason = fmt::format("{} routed tokens < {}: calibrated on all {} tokens", rec.tokens,
                             starved_below_, gram ? gram->tokens() : 0);
    starved = gram == nullptr;
  } else if (starved) {
    // Never calibrate on (nearly) no data: dead columns would zero the expert.
    rec.reason = fmt::format("{} routed tokens < {}: RTN", rec.tokens, starved_below_);
  }
  if (!starved && calibrate) {
    rec.lambda = choose_lambda(m, layer, W, *gram, stats->find(GroupStatistics::fold_key(key, 0)),
                               stats->find(GroupStatistics::fold_key(key, 1)));
    std::optional<QuantizedModule> rounded =
        round_with_damping(m, layer, W, *gram, rec.lambda, rec);
    if (rounded) return std::move(*rounded);
  }
  rec.method = !calibrate ? "rtn" : starved ? "rtn-starved" : "rtn-fallback";
  QuantizedLinear q = RtnRounder().round(W, {}, plan_->grid, {});
  at::Tensor weight = q.dequantize();
  fault_point("rounding");
  return QuantizedModule{std::move(q), std::move(weight), {}};
}

}  // namespace sarqc

#include "sarqc/objective/sarqc.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "sarqc/calib/saliency.h"
#include "sarqc/util/error.h"

namespace sarqc {

SarqcObjective::SarqcObjective(const ObjectiveSettings& s) : settings_(s) {
  if (!(s.lambda_rel >= 0))
    throw_usage(fmt::format("--lambda must be >= 0, got {}", s.lambda_rel));
  const auto& names = saliency_names();
  if (std::find(names.begin(), names.end(), s.saliency) == names.end())
    throw_usage(fmt::format("--saliency '{}': expected one of {}", s.saliency,
                            fmt::join(names, ", ")));
  if (!(s.saliency_power > 0 && s.saliency_power <= 1))
    throw_usage(fmt::format("--saliency-power must lie in (0, 1], got {}", s.saliency_power));
}

namespace {

// diag(H): the damped diagonal minus the uniform damping.
at::Tensor raw_diagonal(const ObjectiveInput& in) {
  return in.damped.diagonal() - (in.damped.diagonal().mean() - in.mean_diag);
}

ColumnStatistics column_statistics(const ObjectiveInput& in) {
  ColumnStatistics stats{raw_diagonal(in), {}, in.damped.options()};
  if (in.gram != nullptr) stats.abs_mean = in.gram->abs_mean().to(in.damped.options());
  return stats;
}

}  // namespace

at::Tensor SarqcObjective::saliency(const ObjectiveInput& in) const {
  if (settings_.saliency == "elem")  // per column: the mean over rows of |W_ij|·sqrt(H_jj)
    return element_saliency(in).mean(0);
  return unnormalised_saliency(settings_.saliency, settings_.saliency_power, in.weight,
                               column_statistics(in));
}

at::Tensor SarqcObjective::element_saliency(const ObjectiveInput& in) const {
  at::Tensor s = unnormalised_saliency("elem", settings_.saliency_power, in.weight,
                                       column_statistics(in));
  const double mean = s.mean().item<double>();
  return mean > 0 ? s / mean : at::ones_like(s);
}

ObjectiveOutput SarqcObjective::build(const ObjectiveInput& in) const {
  const double lambda = in.lambda_rel.value_or(settings_.lambda_rel);
  if (settings_.saliency == "elem" && in.entry_penalty_supported) {
    // Per-entry regularised rounding: M and the target stay, the backend adds the penalty.
    ObjectiveOutput out{in.damped, in.weight};
    out.penalty = {lambda * in.mean_diag * element_saliency(in), in.weight};
    return out;
  }
  at::Tensor s = saliency(in);
  const double mean = s.mean().item<double>();
  s = mean > 0 ? s / mean : at::ones_like(s);  // normalised to mean 1
  at::Tensor metric = in.damped.clone();
  metric.diagonal().add_(lambda * in.mean_diag * s);
  return {metric, in.weight};
}

}  // namespace sarqc

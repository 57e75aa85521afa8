#include "sarqc/objective/objective.h"

#include <functional>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sarqc/objective/interp.h"
#include "sarqc/objective/plain.h"
#include "sarqc/objective/sarqc.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

using Factory = std::function<std::unique_ptr<Objective>(const ObjectiveSettings&)>;

const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> r = {
      {"plain", [](const ObjectiveSettings&) { return std::make_unique<PlainObjective>(); }},
      {"sarqc", [](const ObjectiveSettings& s) { return std::make_unique<SarqcObjective>(s); }},
      {"interp",
       [](const ObjectiveSettings& s) { return std::make_unique<InterpObjective>(s, false); }},
      {"sarqc+interp",
       [](const ObjectiveSettings& s) { return std::make_unique<InterpObjective>(s, true); }},
  };
  return r;
}

}  // namespace

std::unique_ptr<Objective> make_objective(const ObjectiveSettings& settings) {
  const auto it = registry().find(settings.name);
  if (it == registry().end())
    throw_usage(fmt::format("--objective '{}': expected one of {}", settings.name,
                            fmt::join(objective_names(), ", ")));
  const bool uses_lambda = settings.name == "sarqc" || settings.name == "sarqc+interp";
  if (settings.lambda_mode != "fixed" && settings.lambda_mode != "auto" &&
      settings.lambda_mode != "lw")
    throw_usage(fmt::format("--lambda '{}': expected auto, lw or a number >= 0",
                            settings.lambda_mode));
  if (!uses_lambda && (settings.lambda_rel != 0 || settings.lambda_mode != "fixed"))
    throw_usage(fmt::format("--lambda applies only to the sarqc objectives, not '{}'",
                            settings.name));
  const bool uses_alpha = settings.name == "interp" || settings.name == "sarqc+interp";
  if (!uses_alpha && settings.alpha_given)
    throw_usage(fmt::format("--alpha, --alpha-mode and --mixup apply only to the interp "
                            "objectives, not '{}'",
                            settings.name));
  return it->second(settings);
}

std::vector<std::string> objective_names() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

PreparedMetric prepare_metric(const at::Tensor& gram, const at::Tensor& weight, double percdamp,
                              const std::string& module, c10::ScalarType activations) {
  if (!at::isfinite(gram).all().item<bool>()) {
    const bool half = activations == at::kHalf || activations == at::kBFloat16;
    throw_runtime(fmt::format(
        "{}: the calibration Gram matrix contains NaN or Inf (or a batch term beyond 2^52): {}",
        module,
        half ? fmt::format("the {} activations overflowed; try --dtype fp32",
                           c10::toString(activations))
             : std::string("the module's inputs are not finite even in fp32 (the layers before "
                           "it overflow on this calibration data)")));
  }
  PreparedMetric p;
  at::Tensor h = gram.clone();
  p.weight = weight.clone();
  const at::Tensor dead = h.diagonal() == 0;
  p.dead_columns = dead.sum().item<int64_t>();
  if (p.dead_columns > 0) {
    h.diagonal().masked_fill_(dead, 1.0);
    p.weight.masked_fill_(dead.unsqueeze(0), 0.0);
  }
  p.mean_diag = h.diagonal().mean().item<double>();
  h.diagonal().add_(percdamp * p.mean_diag);
  p.damped = h;
  return p;
}

}  // namespace sarqc

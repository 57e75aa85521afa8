#include "sarqc/objective/objective.h"

#include <functional>
#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/objective/plain.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

using Factory = std::function<std::unique_ptr<Objective>()>;

const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> r = {
      {"plain", [] { return std::make_unique<PlainObjective>(); }},
  };
  return r;
}

}  // namespace

std::unique_ptr<Objective> make_objective(const std::string& name) {
  const auto it = registry().find(name);
  if (it == registry().end())
    throw_usage(fmt::format("--objective '{}': expected one of {}", name,
                            fmt::join(objective_names(), ", ")));
  return it->second();
}

std::vector<std::string> objective_names() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

PreparedMetric prepare_metric(const at::Tensor& gram, const at::Tensor& weight, double percdamp,
                              const std::string& module) {
  if (!at::isfinite(gram).all().item<bool>())
    throw_runtime(fmt::format("{}: the calibration Gram matrix contains NaN or Inf (the "
                              "activations overflowed; try --dtype fp32)",
                              module));
  PreparedMetric p;
  at::Tensor h = gram.clone();
  p.weight = weight.clone();
  const at::Tensor dead = h.diagonal() == 0;
  p.dead_columns = dead.sum().item<int64_t>();
  if (p.dead_columns > 0) {
    h.diagonal().masked_fill_(dead, 1.0);
    p.weight.masked_fill_(dead.unsqueeze(0), 0.0);
  }
  h.diagonal().add_(percdamp * h.diagonal().mean().item<double>());
  p.damped = h;
  return p;
}

}  // namespace sarqc

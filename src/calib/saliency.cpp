#include "sarqc/calib/saliency.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sarqc/util/error.h"

namespace sarqc {

const std::vector<std::string>& saliency_names() {
  static const std::vector<std::string> names = {"ones", "hdiag", "absmean", "absmean-pow",
                                                 "elem"};
  return names;
}

SaliencyNeeds saliency_needs(const std::string& kind) {
  return {kind == "hdiag" || kind == "elem", kind == "absmean" || kind == "absmean-pow"};
}

at::Tensor unnormalised_saliency(const std::string& kind, double power, const at::Tensor& weight,
                                 const ColumnStatistics& stats) {
  TORCH_CHECK(weight.dim() == 2, "saliency: weight must be [m, n], got ", weight.sizes());
  const int64_t n = weight.size(1);
  const SaliencyNeeds needs = saliency_needs(kind);
  const at::Tensor& needed = needs.second_moment ? stats.second_moment : stats.abs_mean;
  if (needs.second_moment || needs.abs_mean)
    TORCH_CHECK(needed.defined() && needed.dim() == 1 && needed.size(0) == n, "saliency ", kind,
                ": needs ", needs.second_moment ? "second_moment" : "abs_mean", " [", n,
                "] for a weight ", weight.sizes());
  if (kind == "ones") return at::ones({n}, stats.options);
  if (kind == "hdiag") return stats.second_moment.clone();
  if (kind == "elem")  // clamp: diag H less its damping can round below zero
    return weight.abs() * stats.second_moment.clamp_min(0).sqrt().unsqueeze(0);
  if (kind == "absmean") return stats.abs_mean.clone();
  if (kind == "absmean-pow") return stats.abs_mean.pow(power);
  throw_usage(fmt::format("--saliency '{}': expected one of {}", kind,
                          fmt::join(saliency_names(), ", ")));
}

}  // namespace sarqc

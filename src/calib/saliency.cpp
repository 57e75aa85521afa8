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

at::Tensor unnormalised_saliency(const std::string& kind, double power, const at::Tensor& weight,
                                 const ColumnStatistics& stats) {
  TORCH_CHECK(stats.second_moment.defined() && stats.second_moment.dim() == 1 &&
                  weight.dim() == 2 && stats.second_moment.size(0) == weight.size(1),
              "saliency: second_moment must be [n] for a weight [m, n], got ",
              stats.second_moment.sizes(), " and ", weight.sizes());
  if (kind == "ones") return at::ones_like(stats.second_moment);
  if (kind == "hdiag") return stats.second_moment.clone();
  if (kind == "elem")  // clamp: diag H less its damping can round below zero
    return weight.abs() * stats.second_moment.clamp_min(0).sqrt().unsqueeze(0);
  if (kind == "absmean" || kind == "absmean-pow") {
    TORCH_CHECK(stats.abs_mean.defined() && stats.abs_mean.sizes() == stats.second_moment.sizes(),
                "saliency ", kind, " needs abs_mean [", weight.size(1), "]");
    return kind == "absmean" ? stats.abs_mean.clone() : stats.abs_mean.pow(power);
  }
  throw_usage(fmt::format("--saliency '{}': expected one of {}", kind,
                          fmt::join(saliency_names(), ", ")));
}

}  // namespace sarqc

#include "sarqc/objective/interp.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/objective/sarqc.h"
#include "sarqc/util/error.h"

namespace sarqc {

InterpObjective::InterpObjective(const ObjectiveSettings& settings, bool with_sarqc)
    : settings_(settings), with_sarqc_(with_sarqc) {
  if (settings_.alpha_mode.empty()) settings_.alpha_mode = "fixed";
  const ObjectiveSettings& s = settings_;
  if (s.alpha_mode != "fixed" && s.alpha_mode != "sample")
    throw_usage(fmt::format("--alpha-mode '{}': expected fixed or sample (closed-form is not "
                            "available in this version)",
                            s.alpha_mode));
  if (!(s.alpha >= 0 && s.alpha <= 1))
    throw_usage(fmt::format("--alpha must lie in [0, 1], got {}", s.alpha));
  if (!(s.mixup > 0)) throw_usage(fmt::format("--mixup must be > 0, got {}", s.mixup));
  if (with_sarqc) SarqcObjective check(s);  // validates λ and saliency
}

ObjectiveOutput InterpObjective::build(const ObjectiveInput& in) const {
  TORCH_CHECK(in.gram != nullptr && in.gram->has_cross(), name(),
              ": the cross-Gram D of the full-precision stream is missing");
  const at::Tensor metric =
      with_sarqc_ ? SarqcObjective(settings_).build(in).metric : in.damped;
  const double scale = settings_.alpha_mode == "fixed" ? settings_.alpha : 1.0;
  if (scale == 0) return {metric, in.weight};  // α = 0 is exactly the symmetric objective
  // W_ref = W + scale · (W D) M⁻¹: one GEMM and a Cholesky solve, no n³ product.
  const at::Tensor G = at::matmul(in.weight, in.gram->cross().to(in.weight.scalar_type()));
  const at::Tensor L = at::linalg_cholesky(metric);
  const at::Tensor shift = at::cholesky_solve(G.t(), L).t();  // (M⁻¹ Gᵀ)ᵀ = G M⁻¹
  return {metric, in.weight + scale * shift};
}

double AlphaSampler::next() {
  const double g1 = gamma_(rng_), g2 = gamma_(rng_);
  const double a = g1 / (g1 + g2);
  return std::min(a, 1.0 - a);
}

}  // namespace sarqc

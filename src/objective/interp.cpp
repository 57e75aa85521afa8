#include "sarqc/objective/interp.h"

#include <algorithm>
#include <cstdlib>
#include <locale>
#include <sstream>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/objective/sarqc.h"
#include "sarqc/rounding/cholesky.h"
#include "sarqc/util/error.h"

namespace sarqc {

InterpObjective::InterpObjective(const ObjectiveSettings& settings, bool with_sarqc)
    : settings_(settings), with_sarqc_(with_sarqc) {
  if (settings_.alpha_mode.empty()) settings_.alpha_mode = "fixed";
  const ObjectiveSettings& s = settings_;
  if (s.alpha_mode != "fixed" && s.alpha_mode != "sample" && s.alpha_mode != "closed-form")
    throw_usage(fmt::format("--alpha-mode '{}': expected fixed, sample or closed-form",
                            s.alpha_mode));
  if (!(s.alpha >= 0 && s.alpha <= 1))
    throw_usage(fmt::format("--alpha must lie in [0, 1], got {}", s.alpha));
  if (!(s.mixup > 0)) throw_usage(fmt::format("--mixup must be > 0, got {}", s.mixup));
  if (with_sarqc) SarqcObjective check(s);  // validates λ and saliency
}

ObjectiveOutput InterpObjective::build(const ObjectiveInput& in) const {
  TORCH_CHECK(in.gram != nullptr && in.gram->has_cross(), name(),
              ": the cross-Gram D of the full-precision stream is missing");
  ObjectiveOutput base = with_sarqc_ ? SarqcObjective(settings_).build(in)
                                     : ObjectiveOutput{in.damped, in.weight};
  const at::Tensor metric = base.metric;
  const double scale = settings_.alpha_mode == "fixed"         ? settings_.alpha
                       : settings_.alpha_mode == "closed-form" ? closed_form_alpha(in)
                                                               : 1.0;
  std::optional<double> used;
  if (settings_.alpha_mode != "sample") used = scale;
  if (scale == 0) return {metric, in.weight, used, base.penalty};  // α = 0: the symmetric objective
  // W_ref = W + scale · (W D) M⁻¹: one GEMM and a Cholesky solve, no n³ product.
  const at::Tensor G = at::matmul(in.weight, in.gram->cross().to(in.weight.scalar_type()));
  const at::Tensor L = cholesky_lower(metric);  // FactorizationFailed: more damping
  const at::Tensor shift = at::cholesky_solve(G.t(), L).t();  // (M⁻¹ Gᵀ)ᵀ = G M⁻¹
  return {metric, in.weight + scale * shift, used, base.penalty};  // the penalty pulls toward W
}

double InterpObjective::closed_form_alpha(const ObjectiveInput& in) const {
  if (in.layer == 0) return 0.0;
  const double reference = in.group_size > 0 ? 0.5 : 0.25;
  if (in.layer == 1) return reference;
  const auto it = ratio_.find({in.layer - 1, in.module_type});
  if (it == ratio_.end() || !(it->second.second > 0)) return reference;
  return std::clamp(it->second.first / it->second.second, 0.0, 1.0);
}

std::vector<double> InterpObjective::measure_result(const ObjectiveInput& in,
                                                    const at::Tensor& q) const {
  if (settings_.alpha_mode != "closed-form") return {};
  const auto [num, den] = alpha_star_terms(in.weight, q, in.gram->cross(), in.damped);
  return {num, den};
}

void InterpObjective::add_result(int64_t layer, const std::string& module_type,
                                 const std::vector<double>& terms) {
  if (terms.empty()) return;
  TORCH_CHECK(terms.size() == 2, "InterpObjective::add_result: expected (numerator, denominator)");
  auto& r = ratio_[{layer, module_type}];
  r.first += terms[0];
  r.second += terms[1];
}

std::pair<double, double> alpha_star_terms(const at::Tensor& weight, const at::Tensor& q,
                                           const at::Tensor& cross, const at::Tensor& damped) {
  const at::Tensor W = weight.to(at::kDouble);
  const at::Tensor G = at::matmul(W, cross.to(at::kDouble));  // W D
  const at::Tensor L = cholesky_lower(damped.to(at::kDouble));
  const at::Tensor GHinv = at::cholesky_solve(G.t(), L).t();  // W D H_d⁻¹
  return {((q.to(at::kDouble) - W) * G).sum().item<double>(), (GHinv * G).sum().item<double>()};
}

// "layer module_type numerator denominator" per line, the doubles in hex (exact).
std::string InterpObjective::save_state() const {
  std::string text;
  for (const auto& [key, terms] : ratio_)
    text += fmt::format("{} {} {:a} {:a}\n", key.first, key.second, terms.first, terms.second);
  return text;
}

void InterpObjective::restore_state(const std::string& state) {
  std::map<std::pair<int64_t, std::string>, std::pair<double, double>> ratio;
  std::istringstream in(state);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    int64_t layer = 0;
    std::string type, num, den;
    if (!(fields >> layer >> type >> num >> den))
      throw_runtime(fmt::format("saved closed-form α state: malformed line '{}'", line));
    ratio[{layer, type}] = {std::strtod(num.c_str(), nullptr), std::strtod(den.c_str(), nullptr)};
  }
  ratio_ = std::move(ratio);
}

std::string AlphaSampler::state() const {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out << rng_ << ' ' << gamma_;
  return out.str();
}

void AlphaSampler::restore(const std::string& state) {
  std::istringstream in(state);
  in.imbue(std::locale::classic());
  std::mt19937_64 rng;
  std::gamma_distribution<double> gamma;
  if (!(in >> rng >> gamma)) throw_runtime("saved α-sampler state is malformed");
  rng_ = rng;
  gamma_ = gamma;
}

double AlphaSampler::next() {
  const double g1 = gamma_(rng_), g2 = gamma_(rng_);
  const double a = g1 / (g1 + g2);
  return std::min(a, 1.0 - a);
}

}  // namespace sarqc

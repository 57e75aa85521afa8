#pragma once
// α-interpolated asymmetric calibration (GPTAQ, arXiv 2504.02692; CoreQ, arXiv 2602.05902;
// docs/methods.md §5.3) and its
// combination with SARQC (§5.4): with X_t = X_q + α (X_f − X_q),
//   min ‖Q X_q − W X_t‖² (+ λ'‖(Q − W) S^½‖²)  ⇒  M = H_d (+ λ' S),  W_ref = W + α · W D M⁻¹,
// D = (2/N) ΔX X_qᵀ. Fixed mode scales the raw D by α; sample mode accumulates D with one
// α_j = min(a, 1 − a), a ~ Beta(c, c) per calibration sequence and uses it as is; closed-form
// mode (the public CoreQ code's lagged estimator, "code-derived") uses α = 0 in layer 0,
// α_ref = 0.25 (per-channel) or 0.5 (grouped) in layer 1, and in layer ℓ ≥ 2 the α* measured on
// the same module type of layer ℓ − 1 (experts pooled).
#include <cstdint>
#include <map>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include "sarqc/objective/objective.h"

namespace sarqc {

class InterpObjective : public Objective {
 public:
  // with_sarqc: the metric gains SARQC's drift penalty (objective "sarqc+interp").
  InterpObjective(const ObjectiveSettings& settings, bool with_sarqc);
  std::string name() const override { return with_sarqc_ ? "sarqc+interp" : "interp"; }
  bool needs_fp_stream() const override { return true; }
  bool samples_alpha() const override { return settings_.alpha_mode == "sample"; }
  bool uses_lambda() const override { return with_sarqc_; }
  ObjectiveOutput build(const ObjectiveInput& input) const override;
  std::vector<double> measure_result(const ObjectiveInput& input,
                                     const at::Tensor& q) const override;
  void add_result(int64_t layer, const std::string& module_type,
                  const std::vector<double>& terms) override;
  std::string save_state() const override;
  void restore_state(const std::string& state) override;

 private:
  double closed_form_alpha(const ObjectiveInput& input) const;

  ObjectiveSettings settings_;
  bool with_sarqc_;
  // closed-form: Σ numerators and denominators of α* per (layer, module type)
  std::map<std::pair<int64_t, std::string>, std::pair<double, double>> ratio_;
};

// α* = clamp(⟨Q − W, W D⟩ / ⟨W D H_d⁻¹, W D⟩, 0, 1) as (numerator, denominator): the
// least-squares coefficient of the realised output change on the reachable part of the stream
// mismatch (docs/methods.md §5.3).
std::pair<double, double> alpha_star_terms(const at::Tensor& weight, const at::Tensor& q,
                                           const at::Tensor& cross, const at::Tensor& damped);

// The run's α_j stream (sample mode): one generator seeded once, a_j = G1/(G1 + G2) with
// G1, G2 ~ Gamma(c, 1), α_j = min(a_j, 1 − a_j); draws are consumed in (layer, group, sequence)
// order.
class AlphaSampler {
 public:
  AlphaSampler(uint64_t seed, double mixup) : rng_(seed), gamma_(mixup, 1.0) {}
  double next();
  // The generator's and the distribution's exact state as text (a resumed run continues the
  // stream); restore() throws a runtime Error on text state() did not write.
  std::string state() const;
  void restore(const std::string& state);

 private:
  std::mt19937_64 rng_;
  std::gamma_distribution<double> gamma_;
};

}  // namespace sarqc

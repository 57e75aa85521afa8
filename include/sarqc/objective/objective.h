#pragma once
// A calibration objective turns a module's calibration statistics into the metric M and target
// W_ref that a rounding backend minimises tr((Q − W_ref) M (Q − W_ref)ᵀ) for (docs/methods.md §5).
// Adding one is a file defining an Objective plus one line in objective.cpp's registry.
#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sarqc/calib/gram.h"
#include "sarqc/rounding/rounder.h"

namespace sarqc {

struct ObjectiveInput {
  at::Tensor weight;  // [m, n] fp32, dead columns already zeroed
  at::Tensor damped;  // H_d = H + δI, [n, n] fp32, dead diagonal entries already 1
  const GramAccumulator* gram = nullptr;
  double mean_diag = 0;     // mean(diag H) before damping: the unit of relative λ and damping
  int64_t layer = 0;        // decoder layer, and the module's type (role name: q, gate, ...)
  std::string module_type;  // for objectives that carry estimates from layer to layer
  int64_t group_size = -1;
  bool entry_penalty_supported = false;  // the backend can take an element-wise penalty
  // sarqc objectives: this module's λ_rel (--lambda auto/lw chose it), else the settings'
  std::optional<double> lambda_rel{};
};

struct ObjectiveOutput {
  at::Tensor metric;              // M
  at::Tensor target;              // W_ref
  std::optional<double> alpha{};  // the interpolation actually used, when there is one
  EntryPenalty penalty{};         // element-wise drift penalty (elem saliency), else undefined
};

struct ObjectiveSettings {
  std::string name = "plain";
  double lambda_rel = 0;          // sarqc: λ' = λ_rel · mean(diag H)
  std::string saliency = "ones";  // sarqc: ones | hdiag | absmean | absmean-pow | elem
  double saliency_power = 0.5;    // absmean-pow exponent a ∈ (0, 1]
  // interp, sarqc+interp (docs/methods.md §5.3-5.4)
  std::string alpha_mode;    // fixed | sample | closed-form ("" = the method preset's, else fixed)
  bool alpha_given = false;  // --alpha/--alpha-mode/--mixup given: needs an interp objective
  double alpha = 0.25;       // fixed mode
  double mixup = 5.0;        // sample mode: α_j = min(a, 1 − a), a ~ Beta(c, c)
  // sarqc: "fixed" (lambda_rel), "auto" (held-out choice per module) or "lw" (Ledoit–Wolf
  // intensity per module), objective/lambda_search.h
  std::string lambda_mode = "fixed";
  bool lambda_given = false;  // --lambda given (else auto for the sarqc objectives)
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;
  // Whether the pipeline must also carry the full-precision stream X_f for this objective and
  // accumulate the cross-Gram D (ObjectiveInput::gram->cross()).
  virtual bool needs_fp_stream() const { return false; }
  // Sample mode: D is accumulated with per-sequence weights α_j drawn by the pipeline.
  virtual bool samples_alpha() const { return false; }
  virtual ObjectiveOutput build(const ObjectiveInput& input) const = 0;
  // Whether build() reads a drift penalty λ (the sarqc objectives).
  virtual bool uses_lambda() const { return false; }
  // What the objective learns from a module's dequantized result q: terms for its state,
  // measured where the module was rounded (on its owner rank); empty when it learns nothing.
  virtual std::vector<double> measure_result(const ObjectiveInput& /*input*/,
                                             const at::Tensor& /*q*/) const {
    return {};
  }
  // Adds measured terms. Every rank adds every module's, in module order, so the state does not
  // depend on which rank rounded which module.
  virtual void add_result(int64_t /*layer*/, const std::string& /*module_type*/,
                          const std::vector<double>& /*terms*/) {}
  void observe_result(const ObjectiveInput& input, const at::Tensor& q) {
    add_result(input.layer, input.module_type, measure_result(input, q));
  }
  // What add_result() carries from layer to layer, exactly, as text (a resumed run restores
  // it); empty for objectives without such state.
  virtual std::string save_state() const { return {}; }
  // Throws a runtime Error when `state` is not what save_state() writes.
  virtual void restore_state(const std::string& /*state*/) {}
};

// "plain", "sarqc", "interp", "sarqc+interp"; throws a usage error listing the known names or
// naming a bad setting.
std::unique_ptr<Objective> make_objective(const ObjectiveSettings& settings);
std::vector<std::string> objective_names();

struct PreparedMetric {
  at::Tensor weight;  // W with dead columns zeroed
  at::Tensor damped;  // H_d
  double mean_diag = 0;
  int64_t dead_columns = 0;
};

// docs/methods.md §1: a column with H_jj = 0 gets H_jj = 1 and W[:, j] = 0; then
// H_d = H + percdamp·mean(diag H)·I. Throws a runtime Error on NaN/Inf in H, whose advice
// depends on the dtype the activations were computed in.
PreparedMetric prepare_metric(const at::Tensor& gram, const at::Tensor& weight, double percdamp,
                              const std::string& module,
                              c10::ScalarType activations = at::kFloat);

}  // namespace sarqc

#pragma once
#include "sarqc/objective/objective.h"

namespace sarqc {

// RQC / SARQC, per-column saliency (methods.md §5.2 — our reconstruction: the paper publishes
// neither its saliency nor its λ schedule): a drift penalty λ' Σ_j s_j ‖W_:j − Q_:j‖² toward the
// original weights, i.e. M = H_d + λ'·diag(s), W_ref = W, with λ' = λ_rel · mean(diag H) and s
// normalised to mean 1. Saliency: ones (RQC: tuned damping), hdiag (H_jj), absmean (mean |x_j|),
// absmean-pow ((mean |x_j|)^a).
class SarqcObjective : public Objective {
 public:
  explicit SarqcObjective(const ObjectiveSettings& settings);
  std::string name() const override { return "sarqc"; }
  ObjectiveOutput build(const ObjectiveInput& input) const override;
  // s_j before normalisation, from the statistics.
  at::Tensor saliency(const ObjectiveInput& input) const;

 private:
  ObjectiveSettings settings_;
};

}  // namespace sarqc

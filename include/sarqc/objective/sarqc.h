#pragma once
#include "sarqc/objective/objective.h"

namespace sarqc {

// RQC / SARQC, per-column saliency (SARQC, arXiv 2605.05693; docs/methods.md §5.2, our
// reconstruction: the paper publishes
// neither its saliency nor its λ schedule): a drift penalty λ' Σ_j s_j ‖W_:j − Q_:j‖² toward the
// original weights, i.e. M = H_d + λ'·diag(s), W_ref = W, with λ' = λ_rel · mean(diag H) and s
// normalised to mean 1. Saliency: ones (RQC: tuned damping), hdiag (H_jj), absmean (mean |x_j|),
// absmean-pow ((mean |x_j|)^a), elem (element-wise, below).
class SarqcObjective : public Objective {
 public:
  explicit SarqcObjective(const ObjectiveSettings& settings);
  std::string name() const override { return "sarqc"; }
  ObjectiveOutput build(const ObjectiveInput& input) const override;
  bool uses_lambda() const override { return true; }
  // s_j before normalisation, from the statistics.
  at::Tensor saliency(const ObjectiveInput& input) const;
  // elem: s_ij = |W_ij|·sqrt(H_jj), normalised to mean 1. With a backend that decides one entry
  // at a time it becomes a per-entry penalty λ' s_ij (W_ij − Q_ij)² (M and W_ref unchanged);
  // with GPTQ it collapses to the per-column s_j = mean_i s_ij.
  at::Tensor element_saliency(const ObjectiveInput& input) const;

 private:
  ObjectiveSettings settings_;
};

}  // namespace sarqc

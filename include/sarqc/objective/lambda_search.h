#pragma once
// Choosing SARQC's drift penalty λ per module without user tuning (README, "Choosing λ"; our
// construction). The Gram matrix is a sample estimate: on few tokens the rounding overfits it,
// and the penalty toward W trades some calibration loss for a smaller loss on unseen inputs.
//   auto: two folds of the calibration (calib/holdout_split.h); for each λ of a small grid
//         (0 included) round against one fold's statistics and score on the other's, both
//         ways; the smallest summed held-out loss wins, rescaled to the whole sample (below).
//   lw:   the Ledoit–Wolf shrinkage intensity of the Gram toward a scaled identity, from the
//         per-token fourth moments: no split, one rounding.
// Rescaling: estimation noise in a second-moment matrix falls as 1/N, so the penalty chosen on
// a fit of N_fit tokens is scaled by N_fit/N for the final rounding on all N.
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "sarqc/calib/gram.h"
#include "sarqc/objective/lambda_choice.h"

namespace sarqc {

// Candidates of auto before the Ledoit–Wolf one: 0 and a geometric grid up to 3
// (λ_rel, in units of mean(diag H)); the search stops two candidates past the
// best.
const std::vector<double>& lambda_grid();
constexpr double kMaxLambda = 10.0;
// Rows of a module the search rounds (evenly spaced; all of them in smaller modules).
constexpr int64_t kLambdaSearchRows = 512;

// ρ/(1−ρ) for the Ledoit–Wolf intensity ρ of the sample second moment S = Σ x
// xᵀ / T toward tr(S)/n · I: S's shrunk estimate is ∝ S + ρ/(1−ρ)·tr(S)/n·I,
// which is SARQC's metric with saliency ones. Capped at kMaxLambda; kMaxLambda
// with fewer than two tokens.
double ledoit_wolf_lambda(const GramAccumulator& gram);

// The objective's loss of the dequantized weight q on held-out statistics, up
// to a constant: Σ_t ‖q x_t − W y_t‖² with y_t = x_t + a·(x_f,t − x_t), i.e.
// tr(E H Eᵀ) − 2a·Σ(E ⊙ W D) for E = q − W (interp_scale a = 0: the plain loss;
// the fold's D already carries sampled α_j, with a = 1).
double held_out_loss(const at::Tensor& weight, const at::Tensor& q, const GramAccumulator& held_out,
                     double interp_scale);

// What one fit of the search gives: the dequantized weight rounded against a
// fold's statistics with the candidate λ, and the interpolation scale of its
// objective (0: none).
struct HeldOutFit {
  at::Tensor q;
  double interp_scale = 0;
};

// --lambda auto for one module: `fit(fold, λ)` rounds against a fold's
// statistics (and may throw FactorizationFailed: that λ drops out). Candidates
// are the grid plus the Ledoit–Wolf intensity at the fit's size, in increasing
// order; each λ is fitted on either fold and scored on the other; the search
// stops two candidates past the best once the Ledoit–Wolf candidate is behind.
// The final λ is the winner times N_fit/N. Without two folds of two tokens or
// more (or when no candidate fits) λ is the Ledoit–Wolf intensity of `all`, and
// `note` says why.
LambdaChoice search_lambda(const at::Tensor& weight, const GramAccumulator& all,
                           const GramAccumulator* fold0, const GramAccumulator* fold1,
                           const std::function<HeldOutFit(const GramAccumulator&, double)>& fit);

}  // namespace sarqc

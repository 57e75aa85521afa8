#include "sarqc/objective/lambda_search.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "sarqc/rounding/rounder.h"
#include "sarqc/util/stopwatch.h"

namespace sarqc {

const std::vector<double>& lambda_grid() {
  static const std::vector<double> grid = {0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0};
  return grid;
}

double ledoit_wolf_lambda(const GramAccumulator& gram) {
  const double T = static_cast<double>(gram.tokens());
  if (T < 2) return kMaxLambda;
  const at::Tensor S = gram.sum_of_outer_products() / T;  // fp64
  const double p = static_cast<double>(S.size(0));
  const double mu = S.diagonal().sum().item<double>() / p;
  const double frob2 = (S * S).sum().item<double>();  // tr(S²)
  const double delta2 = (frob2 - p * mu * mu) / p;    // ‖S − μI‖² (norm tr(·)/p)
  const double m4 = gram.sum_of_squared_norms_squared() * p * p / T;  // mean ‖x_t‖⁴
  const double beta_bar2 = (m4 - frob2) / (T * p);
  if (!(delta2 > 0)) return kMaxLambda;  // S is already a multiple of I (or empty)
  const double rho = std::clamp(std::min(beta_bar2, delta2) / delta2, 0.0, 1.0);
  return rho >= 1 ? kMaxLambda : std::min(kMaxLambda, rho / (1 - rho));
}

double held_out_loss(const at::Tensor& weight, const at::Tensor& q, const GramAccumulator& held_out,
                     double interp_scale) {
  // The products in fp32 (they cost as much as a rounding sweep), the sums in
  // fp64.
  const at::Tensor W = weight.to(at::kFloat);
  const at::Tensor E = q.to(at::kFloat) - W;
  const at::Tensor E64 = E.to(at::kDouble);
  double loss =
      (at::matmul(E, held_out.matrix().to(E.device())).to(at::kDouble) * E64).sum().item<double>();
  if (interp_scale != 0 && held_out.has_cross())
    loss -=
        2 * interp_scale *
        (E64 * at::matmul(W, held_out.cross().to(E.device())).to(at::kDouble)).sum().item<double>();
  return loss;
}

LambdaChoice search_lambda(const at::Tensor& weight, const GramAccumulator& all,
                           const GramAccumulator* fold0, const GramAccumulator* fold1,
                           const std::function<HeldOutFit(const GramAccumulator&, double)>& fit) {
  const Stopwatch clock;
  LambdaChoice c;
  c.mode = "auto";
  c.lw_lambda = ledoit_wolf_lambda(all);
  c.lambda = c.lw_lambda;
  const std::array<const GramAccumulator*, 2> folds{fold0, fold1};
  // Each fold must hold tokens to fit on and to score with: else the analytic
  // choice.
  for (const GramAccumulator* f : folds)
    if (f == nullptr || f->tokens() < 2) {
      c.note = "too few tokens to hold any out: Ledoit-Wolf";
      return c;
    }
  c.fit_share = 0.5 * static_cast<double>(fold0->tokens() + fold1->tokens()) /
                static_cast<double>(all.tokens());
  std::vector<double> candidates = lambda_grid();
  // The Ledoit–Wolf intensity at the fit's size joins the grid (combined:
  // whichever holds out better wins).
  const double lw_fit = std::min(kMaxLambda, c.lw_lambda / c.fit_share);
  candidates.push_back(lw_fit);
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  double best = std::numeric_limits<double>::infinity();
  int worse = 0;
  for (const double lambda : candidates) {
    double loss = 0;
    try {
      for (int f = 0; f < 2; ++f) {
        const HeldOutFit result = fit(*folds[static_cast<size_t>(f)], lambda);
        loss += held_out_loss(weight, result.q, *folds[static_cast<size_t>(1 - f)],
                              result.interp_scale);
      }
    } catch (const FactorizationFailed&) {
      loss = std::numeric_limits<double>::infinity();  // this λ cannot be
                                                       // fitted: no candidate
    }
    ++c.candidates;
    if (lambda == 0) c.held_out_zero = loss;
    if (lambda == lw_fit) c.held_out_lw = loss;
    if (loss < best) {
      best = loss;
      c.fit_lambda = lambda;
      c.held_out_chosen = loss;
      worse = 0;
    } else if (++worse >= 2 && lambda >= lw_fit) {
      break;  // two candidates past the best, and the Ledoit–Wolf one has had
              // its turn
    }
  }
  if (std::isinf(best))
    c.note = "no candidate could be fitted: Ledoit-Wolf";
  else
    c.lambda = c.fit_lambda * c.fit_share;
  c.seconds = clock.seconds();
  return c;
}

}  // namespace sarqc

// --lambda auto and lw (objective/lambda_search.h) against their definitions: the Ledoit–Wolf
// intensity from its defining sums, the held-out loss as the output error on held-out tokens,
// the search's choice as the argmin of losses this test computes itself, and the purpose — on
// fewer tokens than inputs, the chosen λ generalises better than λ = 0 to the true covariance,
// while on plenty of tokens it stays near 0.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "sarqc/calib/gram.h"
#include "sarqc/objective/lambda_search.h"
#include "sarqc/objective/objective.h"
#include "sarqc/quant/quantized_linear.h"
#include "sarqc/rounding/gptq.h"

namespace sarqc {
namespace {

// Inputs with a decaying spectrum: x = A z, z ~ N(0, I); Σ = A Aᵀ with eigenvalues decay^k.
struct Source {
  at::Tensor A;
  at::Tensor sample(int64_t tokens) const {
    return at::matmul(at::randn({tokens, A.size(1)}), A.t());
  }
  at::Tensor covariance() const { return at::matmul(A, A.t()); }
};

Source make_source(int64_t n, double decay = 0.85) {
  const at::Tensor q = std::get<0>(at::linalg_qr(at::randn({n, n})));
  const at::Tensor spectrum = at::pow(decay, at::arange(n, at::kFloat));
  return {q * spectrum.sqrt().unsqueeze(0)};
}

TEST(LambdaSearch, LedoitWolfMatchesItsDefiningSums) {
  at::manual_seed(5);
  const int64_t T = 40, p = 12;
  const at::Tensor X = at::randn({T, p}) * at::linspace(0.3, 2.0, p).unsqueeze(0);
  GramAccumulator g(p, c10::kCPU);
  g.add(X.narrow(0, 0, 25), 1);
  g.add(X.narrow(0, 25, 15), 1);
  // Ledoit & Wolf (2004): ⟨A, B⟩ = tr(ABᵀ)/p, m = ⟨S, I⟩, d² = ‖S − mI‖², b̄² = Σ_k ‖x_k x_kᵀ −
  // S‖² / T², b² = min(b̄², d²), shrinkage b²/d², here in fp64 term by term.
  const at::Tensor Xd = X.to(at::kDouble);
  const at::Tensor S = at::matmul(Xd.t(), Xd) / T;
  const at::Tensor I = at::eye(p, at::kDouble);
  const double m = S.trace().item<double>() / p;
  const double d2 = (S - m * I).pow(2).sum().item<double>() / p;
  double b_bar2 = 0;
  for (int64_t k = 0; k < T; ++k) {
    const at::Tensor x = Xd[k].unsqueeze(1);
    b_bar2 += (at::matmul(x, x.t()) - S).pow(2).sum().item<double>() / p;
  }
  b_bar2 /= static_cast<double>(T * T);
  const double rho = std::min(b_bar2, d2) / d2;
  ASSERT_GT(rho, 0.01);  // a case where the intensity matters
  ASSERT_LT(rho, 0.99);
  // fp32 inputs and products: relative errors of order T·2^-24 in S, amplified by the
  // differences in d² and b̄² (both well away from cancellation here).
  EXPECT_NEAR(ledoit_wolf_lambda(g), rho / (1 - rho), 1e-4 * rho / (1 - rho));

  GramAccumulator one(p, c10::kCPU);
  one.add(X.narrow(0, 0, 1), 1);
  EXPECT_EQ(ledoit_wolf_lambda(one), kMaxLambda);  // one token estimates nothing
  GramAccumulator isotropic(4, c10::kCPU);
  isotropic.add(at::eye(4) * 2, 1);  // S = I: nothing to shrink toward, already the target
  EXPECT_EQ(ledoit_wolf_lambda(isotropic), kMaxLambda);
}

TEST(LambdaSearch, HeldOutLossIsTheOutputErrorOnHeldOutTokens) {
  at::manual_seed(6);
  const int64_t T = 30, n = 10, m = 7, N = 3;
  const at::Tensor X = at::randn({T, n});
  const at::Tensor Xf = X + 0.3 * at::randn({T, n});
  const at::Tensor W = at::randn({m, n});
  const at::Tensor Q = W + 0.1 * at::randn({m, n});
  GramAccumulator ho(n, c10::kCPU);
  ho.add(X, Xf, at::ones({T}), N);
  const at::Tensor Xd = X.to(at::kDouble), Wd = W.to(at::kDouble), Qd = Q.to(at::kDouble);
  const at::Tensor delta = Xf.to(at::kDouble) - Xd;
  // (2/N) Σ_t ‖Q x_t − W y_t‖², y_t = x_t + a Δ_t, minus its Q-free part (2/N) Σ_t ‖a W Δ_t‖².
  for (const double a : {0.0, 0.25, 1.0}) {
    const at::Tensor y = Xd + a * delta;
    const double direct = 2.0 / N *
                          ((at::matmul(Xd, Qd.t()) - at::matmul(y, Wd.t())).pow(2).sum() -
                           (a * at::matmul(delta, Wd.t())).pow(2).sum())
                              .item<double>();
    EXPECT_NEAR(held_out_loss(W, Q, ho, a), direct, 1e-5 * std::abs(direct) + 1e-6) << "a " << a;
  }
}

// GPTQ at 3 bits per channel with M = H_d + λ·mean(diag H)·I (sarqc, saliency ones).
at::Tensor round_gptq(const at::Tensor& W, const GramAccumulator& g, double lambda) {
  const PreparedMetric p = prepare_metric(g.matrix(), W, 0.01, "m");
  const at::Tensor M = p.damped + lambda * p.mean_diag * at::eye(W.size(1));
  return GptqRounder().round(p.weight, M, QuantGrid{3, -1, true, false}, {}).dequantize();
}

HeldOutFit fit_gptq(const at::Tensor& W, const GramAccumulator& g, double lambda) {
  return {round_gptq(W, g, lambda), 0.0};
}

struct Folds {
  GramAccumulator all, fold0, fold1;
};

Folds accumulate(const at::Tensor& X, int64_t pieces) {
  const int64_t n = X.size(1), per = X.size(0) / pieces;
  Folds f{GramAccumulator(n, c10::kCPU), GramAccumulator(n, c10::kCPU),
          GramAccumulator(n, c10::kCPU)};
  for (int64_t k = 0; k < pieces; ++k) {
    const at::Tensor x = X.narrow(0, k * per, per);
    f.all.add(x, 1);
    (k % 2 == 0 ? f.fold0 : f.fold1).add(x, 1);
  }
  return f;
}

TEST(LambdaSearch, ChoosesTheSmallestHeldOutLossOfTheCandidatesAndRescales) {
  at::manual_seed(7);
  const Source source = make_source(24);
  const at::Tensor W = at::randn({16, 24});
  const Folds f = accumulate(source.sample(32), 4);
  const LambdaChoice c =
      search_lambda(W, f.all, &f.fold0, &f.fold1,
                    [&](const GramAccumulator& g, double l) { return fit_gptq(W, g, l); });
  ASSERT_TRUE(c.note.empty()) << c.note;
  EXPECT_EQ(c.mode, "auto");
  EXPECT_DOUBLE_EQ(c.fit_share, 0.5);
  EXPECT_DOUBLE_EQ(c.lw_lambda, ledoit_wolf_lambda(f.all));
  // The candidates in increasing order: the grid and the Ledoit–Wolf intensity at the fit size.
  std::vector<double> candidates = lambda_grid();
  candidates.push_back(std::min(kMaxLambda, c.lw_lambda / c.fit_share));
  std::sort(candidates.begin(), candidates.end());
  ASSERT_GE(c.candidates, 3);
  ASSERT_LE(c.candidates, static_cast<int>(candidates.size()));
  double best = std::numeric_limits<double>::infinity(), argmin = -1;
  for (int i = 0; i < c.candidates; ++i) {
    const double l = candidates[static_cast<size_t>(i)];
    const double loss = held_out_loss(W, round_gptq(W, f.fold0, l), f.fold1, 0) +
                        held_out_loss(W, round_gptq(W, f.fold1, l), f.fold0, 0);
    if (l == 0) EXPECT_NEAR(c.held_out_zero, loss, 1e-9 * std::abs(loss));
    if (loss < best) best = loss, argmin = l;
  }
  EXPECT_DOUBLE_EQ(c.fit_lambda, argmin);
  EXPECT_NEAR(c.held_out_chosen, best, 1e-9 * std::abs(best));
  EXPECT_DOUBLE_EQ(c.lambda, argmin * c.fit_share);
  EXPECT_LE(c.held_out_chosen, c.held_out_zero);

  // Without two usable folds: the Ledoit–Wolf intensity, said so.
  const LambdaChoice lone =
      search_lambda(W, f.all, &f.fold0, nullptr,
                    [&](const GramAccumulator& g, double l) { return fit_gptq(W, g, l); });
  EXPECT_FALSE(lone.note.empty());
  EXPECT_DOUBLE_EQ(lone.lambda, ledoit_wolf_lambda(f.all));
  EXPECT_EQ(lone.candidates, 0);
}

// The generalisation error tr(E Σ Eᵀ) of the final rounding on all tokens, E = Q − W.
double true_loss(const at::Tensor& W, const at::Tensor& Q, const at::Tensor& sigma) {
  const at::Tensor E = (Q - W).to(at::kDouble);
  return (at::matmul(E, sigma.to(at::kDouble)) * E).sum().item<double>();
}

TEST(LambdaSearch, OnFewerTokensThanInputsTheChosenLambdaGeneralisesBetterThanZero) {
  // 24 tokens for 48 inputs whose variance spreads over many directions (eigenvalues 0.95^k):
  // H has rank 24, and GPTQ at λ = 0 pushes the error into directions it never saw.
  double auto_total = 0, zero_total = 0;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    at::manual_seed(100 + seed);
    const Source source = make_source(48, 0.95);
    const at::Tensor W = at::randn({32, 48});
    const Folds f = accumulate(source.sample(24), 4);
    const LambdaChoice c =
        search_lambda(W, f.all, &f.fold0, &f.fold1,
                      [&](const GramAccumulator& g, double l) { return fit_gptq(W, g, l); });
    EXPECT_GT(c.lambda, 0) << "seed " << seed;
    const double with_auto = true_loss(W, round_gptq(W, f.all, c.lambda), source.covariance());
    const double with_zero = true_loss(W, round_gptq(W, f.all, 0), source.covariance());
    EXPECT_LT(with_auto, with_zero) << "seed " << seed;
    auto_total += with_auto, zero_total += with_zero;
  }
  EXPECT_LT(auto_total, 0.9 * zero_total);
}

TEST(LambdaSearch, OnPlentyOfTokensTheChosenLambdaStaysNearZero) {
  at::manual_seed(9);
  const Source source = make_source(24);
  const at::Tensor W = at::randn({16, 24});
  const Folds f = accumulate(source.sample(24 * 256), 16);
  const LambdaChoice c =
      search_lambda(W, f.all, &f.fold0, &f.fold1,
                    [&](const GramAccumulator& g, double l) { return fit_gptq(W, g, l); });
  // The Ledoit–Wolf intensity falls as 1/T; the held-out choice keeps within the grid's first
  // step, and costs the calibration loss almost nothing.
  EXPECT_LT(c.lw_lambda, 0.01);
  EXPECT_LE(c.lambda, 0.01);
  const double with_auto = true_loss(W, round_gptq(W, f.all, c.lambda), source.covariance());
  const double with_zero = true_loss(W, round_gptq(W, f.all, 0), source.covariance());
  EXPECT_LT(with_auto, 1.05 * with_zero);
}

}  // namespace
}  // namespace sarqc

// The α-interpolated objectives (docs/methods.md §5.3-5.4) against the identities of its §9
// (items 1, 2, 7, 9).
#include <algorithm>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/calib/gram.h"
#include "sarqc/objective/interp.h"
#include "sarqc/objective/objective.h"
#include "test_support.h"

namespace sarqc {
namespace {

struct Streams {
  at::Tensor W, Xq, Xf;  // W [m, n]; X as [tokens, n]
  GramAccumulator gram{10, c10::kCPU};
  int64_t sequences = 4;
};

Streams make_streams(uint64_t seed) {
  at::manual_seed(seed);
  Streams s;
  s.W = at::randn({5, 10}, at::kDouble);
  s.Xq = at::randn({200, 10}, at::kDouble);
  s.Xf = s.Xq + 0.3 * at::randn({200, 10}, at::kDouble);  // the full-precision stream
  for (int64_t j = 0; j < s.sequences; ++j)
    s.gram.add(s.Xq.narrow(0, j * 50, 50), s.Xf.narrow(0, j * 50, 50),
               at::ones({50}, at::kDouble), 1);
  return s;
}

ObjectiveOutput build(const Streams& s, ObjectiveSettings settings, double percdamp = 0) {
  const PreparedMetric p = prepare_metric(s.gram.matrix(), s.W.to(at::kFloat), percdamp, "m");
  auto in = ObjectiveInput{p.weight.to(at::kDouble), p.damped.to(at::kDouble), &s.gram, p.mean_diag};
  return make_objective(settings)->build(in);
}

// (2/N)‖Q X_q − W X_t‖² with X_t = X_q + α (X_f − X_q), plus λ'‖(Q − W) S^½‖².
double direct(const Streams& s, const at::Tensor& Q, double alpha, const at::Tensor& penalty) {
  const at::Tensor Xt = s.Xq + alpha * (s.Xf - s.Xq);
  double v = 2.0 / s.sequences * (at::matmul(Q, s.Xq.t()) - at::matmul(s.W, Xt.t())).pow(2).sum().item<double>();
  if (penalty.defined()) {
    const at::Tensor d = Q - s.W;
    v += (at::matmul(d, penalty) * d).sum().item<double>();
  }
  return v;
}

double trace_form(const at::Tensor& Q, const ObjectiveOutput& o) {
  const at::Tensor d = Q - o.target;
  return (at::matmul(d, o.metric) * d).sum().item<double>();
}

// The accumulator sums T = 200 products in fp32 (unit roundoff u = 2^-24) after rounding its
// fp64 inputs to fp32: each entry of H is off by at most γ·(2/N)Σ_t|x_ti||x_tj| and each entry
// of D by γ·(2/N)Σ_t(|xf_ti| + |xq_ti|)|xq_tj| (the difference is taken in fp32), with
// γ = (T + 8)·u covering the sum, the input roundings and the running-average rescales.
// With d = Q − W the Q-dependent part of the trace form is d M dᵀ − 2α d Dᵀ Wᵀ plus terms
// that do not depend on Q; it is linear in H and D, so its error is bounded by those entry
// bounds against |d|ᵀ|d| and 2α|d|ᵀ|W|.
struct AccumulationBound {
  at::Tensor h, d;  // entry-wise bounds on |H̃ − H| and |D̃ − D|
};

AccumulationBound accumulation_bound(const Streams& s) {
  const double gamma = (s.Xq.size(0) + 8) * std::ldexp(1.0, -24);
  const double scale = 2.0 / s.sequences;
  const at::Tensor aq = s.Xq.abs(), af = s.Xf.abs();
  return {gamma * scale * at::matmul(aq.t(), aq), gamma * scale * at::matmul((af + aq).t(), aq)};
}

// Bound on |err(Q)| of one trace-form evaluation; two evaluations differ by at most the sum.
double trace_error_bound(const Streams& s, const at::Tensor& Q, double alpha) {
  const AccumulationBound b = accumulation_bound(s);
  const at::Tensor ad = (Q - s.W).abs();
  return (at::matmul(ad.t(), ad) * b.h).sum().item<double>() +
         2 * alpha * (at::matmul(ad.t(), s.W.abs()) * b.d.t()).sum().item<double>();
}

TEST(Interp, TargetMakesTheTraceFormEqualTheInterpolatedLossUpToAConstant) {
  const Streams s = make_streams(1);
  for (double alpha : {0.25, 0.7}) {
    ObjectiveSettings set{"interp"};
    set.alpha = alpha;
    const ObjectiveOutput o = build(s, set);
    std::vector<double> gaps, bounds;
    for (int k = 0; k < 3; ++k) {
      const at::Tensor Q = s.W + 0.5 * at::randn_like(s.W);
      gaps.push_back(direct(s, Q, alpha, {}) - trace_form(Q, o));
      bounds.push_back(trace_error_bound(s, Q, alpha));
    }
    EXPECT_NEAR(gaps[0], gaps[1], bounds[0] + bounds[1]) << alpha;
    EXPECT_NEAR(gaps[0], gaps[2], bounds[0] + bounds[2]) << alpha;
    // The bound is far below what a wrong α would cost: the test can fail.
    const ObjectiveOutput off = build(s, [&] {
      ObjectiveSettings wrong{"interp"};
      wrong.alpha = alpha + 0.1;
      return wrong;
    }());
    const at::Tensor Q1 = s.W + 0.5 * at::randn_like(s.W), Q2 = s.W + 0.5 * at::randn_like(s.W);
    EXPECT_GT(std::abs((direct(s, Q1, alpha, {}) - trace_form(Q1, off)) -
                       (direct(s, Q2, alpha, {}) - trace_form(Q2, off))),
              2 * (trace_error_bound(s, Q1, alpha) + trace_error_bound(s, Q2, alpha)));
    // W_ref is the least-squares solution of X_q W_refᵀ = X_t Wᵀ. First-order perturbation of
    // α·W D H⁻¹ by the accumulation errors: ‖ΔW_ref‖ ≤ α‖W‖‖H⁻¹‖(‖E_D‖ + ‖D H⁻¹‖‖E_H‖), twice
    // that for the higher-order terms, the input rounding and the solve.
    const at::Tensor Xt = s.Xq + alpha * (s.Xf - s.Xq);
    const at::Tensor ls = std::get<0>(at::linalg_lstsq(s.Xq, at::matmul(Xt, s.W.t()))).t();
    const AccumulationBound b = accumulation_bound(s);
    auto norm2 = [](const at::Tensor& x) { return at::linalg_svdvals(x).max().item<double>(); };
    const at::Tensor H = s.gram.matrix().to(at::kDouble), D = s.gram.cross().to(at::kDouble);
    const at::Tensor Hinv = at::inverse(H);
    const double bound = 2 * alpha * norm2(s.W) * norm2(Hinv) *
                         (b.d.norm().item<double>() +
                          norm2(at::matmul(D, Hinv)) * b.h.norm().item<double>());
    EXPECT_LE((o.target - ls).norm().item<double>(), bound) << alpha;
  }
}

TEST(Interp, InterpolationIdentity) {
  // (1−α)‖QXq − WXq‖² + α‖QXq − WXf‖² = ‖QXq − WXt‖² + α(1−α)‖WΔX‖²
  const Streams s = make_streams(2);
  const at::Tensor Q = s.W + 0.2 * at::randn_like(s.W);
  const double a = 0.37;
  auto sq = [](const at::Tensor& t) { return t.pow(2).sum().item<double>(); };
  const at::Tensor QX = at::matmul(Q, s.Xq.t());
  const double left = (1 - a) * sq(QX - at::matmul(s.W, s.Xq.t())) + a * sq(QX - at::matmul(s.W, s.Xf.t()));
  const at::Tensor Xt = s.Xq + a * (s.Xf - s.Xq);
  const double right = sq(QX - at::matmul(s.W, Xt.t())) + a * (1 - a) * sq(at::matmul(s.W, (s.Xf - s.Xq).t()));
  EXPECT_NEAR(left, right, 1e-9 * left);
}

TEST(Interp, CombinedWithSarqcTheDriftTermIsPartOfTheSameQuadratic) {
  const Streams s = make_streams(3);
  ObjectiveSettings set{"sarqc+interp", 0.2, "absmean", 0.5};
  set.alpha = 0.4;
  const ObjectiveOutput o = build(s, set);
  // λ' S = M − H (percdamp 0): the penalty the direct loss adds.
  const at::Tensor penalty = o.metric - s.gram.matrix().to(at::kDouble);
  EXPECT_TRUE(at::allclose(penalty, at::diag(penalty.diagonal()), 0, 1e-9));
  std::vector<double> gaps, bounds;
  for (int k = 0; k < 3; ++k) {
    const at::Tensor Q = s.W + 0.5 * at::randn_like(s.W);
    gaps.push_back(direct(s, Q, 0.4, penalty) - trace_form(Q, o));
    bounds.push_back(trace_error_bound(s, Q, 0.4));  // the penalty is read back from M: exact
  }
  EXPECT_NEAR(gaps[0], gaps[1], bounds[0] + bounds[1]);
  EXPECT_NEAR(gaps[0], gaps[2], bounds[0] + bounds[2]);
}

TEST(Interp, AlphaZeroAndConstantSamplesReduceToTheFixedModes) {
  const Streams s = make_streams(4);
  ObjectiveSettings zero{"interp"};
  zero.alpha = 0;
  EXPECT_TRUE(at::equal(build(s, zero, 0.01).target, s.W.to(at::kFloat).to(at::kDouble)));
  // Sample mode whose α_j all equal 0.3 (D accumulated with those weights) = fixed 0.3.
  Streams weighted = make_streams(4);
  weighted.gram = GramAccumulator(10, c10::kCPU);
  for (int64_t j = 0; j < 4; ++j)
    weighted.gram.add(weighted.Xq.narrow(0, j * 50, 50), weighted.Xf.narrow(0, j * 50, 50),
                      at::full({50}, 0.3, at::kDouble), 1);
  ObjectiveSettings fixed{"interp"}, sample{"interp"};
  fixed.alpha = 0.3;
  sample.alpha_mode = "sample";
  // H is accumulated identically; D differs by the two fp32 accumulations' errors (each within
  // the entry bound), which move W_ref by at most α‖W‖‖M⁻¹‖·2‖E_D‖ (M ⪰ H, so ‖M⁻¹‖ ≤ ‖H⁻¹‖).
  const AccumulationBound b = accumulation_bound(s);
  auto norm2 = [](const at::Tensor& x) { return at::linalg_svdvals(x).max().item<double>(); };
  const double bound = 2 * 0.3 * norm2(s.W) *
                       norm2(at::inverse(s.gram.matrix().to(at::kDouble))) * 2 *
                       (0.3 * b.d).norm().item<double>() / 0.3;
  EXPECT_LE((build(weighted, sample, 0.01).target - build(s, fixed, 0.01).target)
                .norm()
                .item<double>(),
            bound);
}

TEST(Interp, AlphaSamplerIsSeededWithTheStatedMoments) {
  AlphaSampler a(7, 5.0), b(7, 5.0), c(8, 5.0);
  std::vector<double> xs;
  for (int i = 0; i < 20000; ++i) xs.push_back(a.next());
  EXPECT_EQ(b.next(), xs[0]);
  EXPECT_NE(c.next(), xs[0]);
  double mean = 0, var = 0;
  for (double x : xs) mean += x / xs.size();
  for (double x : xs) var += (x - mean) * (x - mean) / xs.size();
  EXPECT_NEAR(mean, 0.377, 0.005);           // docs/methods.md: mean 0.377, sd 0.087 for c = 5
  EXPECT_NEAR(std::sqrt(var), 0.087, 0.004);
  for (double x : xs) ASSERT_TRUE(x >= 0 && x <= 0.5);
}

TEST(Interp, ClosedFormAlphaIsTheProjectionRegression) {
  const Streams s = make_streams(6);
  const at::Tensor Q = s.W + 0.3 * at::randn_like(s.W);
  const at::Tensor H = s.gram.matrix().to(at::kDouble);
  const auto [num, den] = alpha_star_terms(s.W, Q, s.gram.cross(), H);
  // argmin_a ‖(Q − W) X_q − a · W ΔX P‖², P the projector onto the row space of X_q.
  const at::Tensor Xq = s.Xq, dX = s.Xf - s.Xq;  // [tokens, n]
  const at::Tensor P = at::matmul(at::matmul(Xq, at::inverse(at::matmul(Xq.t(), Xq))), Xq.t());
  const at::Tensor A = at::matmul(Q - s.W, Xq.t());
  const at::Tensor B = at::matmul(at::matmul(s.W, dX.t()), P);
  const double a = (A * B).sum().item<double>() / (B * B).sum().item<double>();
  // num = ⟨Q − W, W D⟩ and den = ⟨W D H⁻¹, W D⟩ from fp32 statistics: to first order
  // |Δnum| ≤ Σ(|Q − W|ᵀ|W|)∘E_D and |Δden| ≤ 2‖W E_D H⁻¹‖‖W D‖ + ‖W D H⁻¹‖²‖E_H‖; twice the
  // summed relative errors bounds the ratio's.
  const AccumulationBound b = accumulation_bound(s);
  const at::Tensor D = s.gram.cross().to(at::kDouble), Hinv = at::inverse(H);
  const at::Tensor WD = at::matmul(s.W, D), WDHinv = at::matmul(WD, Hinv);
  const double dnum = (at::matmul((Q - s.W).abs().t(), s.W.abs()) * b.d.t()).sum().item<double>();
  const double dden =
      2 * at::matmul(at::matmul(s.W.abs(), b.d), Hinv.abs()).norm().item<double>() *
          WD.norm().item<double>() +
      WDHinv.norm().item<double>() * WDHinv.norm().item<double>() * b.h.norm().item<double>();
  const double relative = 2 * (dnum / std::abs(num) + dden / std::abs(den));
  EXPECT_NEAR(num / den, a, relative * std::abs(a));
  EXPECT_GT(std::abs(a) * 0.05, relative * std::abs(a));  // tight enough to see a wrong term
}

TEST(Interp, ClosedFormModeIsLaggedByOneLayerPerModuleType) {
  Streams s = make_streams(7);
  ObjectiveSettings set{"interp"};
  set.alpha_mode = "closed-form";
  auto objective = make_objective(set);
  const PreparedMetric p = prepare_metric(s.gram.matrix(), s.W.to(at::kFloat), 0.01, "m");
  auto input = [&](int64_t layer, const char* type, int64_t group) {
    return ObjectiveInput{p.weight, p.damped, &s.gram, p.mean_diag, layer, type, group};
  };
  EXPECT_EQ(*objective->build(input(0, "q", -1)).alpha, 0.0);
  EXPECT_EQ(*objective->build(input(1, "q", -1)).alpha, 0.25);
  EXPECT_EQ(*objective->build(input(1, "q", 32)).alpha, 0.5);
  // Layer 1's result for "q" sets layer 2's α for "q" only.
  const at::Tensor q1 = p.weight + 0.2 * at::randn_like(p.weight);
  objective->observe_result(input(1, "q", -1), q1);
  const auto [num, den] = alpha_star_terms(p.weight, q1, s.gram.cross(), p.damped);
  EXPECT_NEAR(*objective->build(input(2, "q", -1)).alpha, std::clamp(num / den, 0.0, 1.0), 1e-12);
  EXPECT_EQ(*objective->build(input(2, "k", -1)).alpha, 0.25);  // nothing measured for k
}

TEST(Interp, BadSettingsAreUsageErrors) {
  ObjectiveSettings s{"interp"};
  s.alpha = 1.5;
  test::expect_error([&] { make_objective(s); }, ErrorKind::Usage, "--alpha must lie in [0, 1]");
  s = ObjectiveSettings{"interp"};
  s.alpha_mode = "closed";
  test::expect_error([&] { make_objective(s); }, ErrorKind::Usage, "--alpha-mode 'closed'");
  s = ObjectiveSettings{"plain"};
  s.alpha_given = true;
  test::expect_error([&] { make_objective(s); }, ErrorKind::Usage, "apply only to the interp");
}

}  // namespace
}  // namespace sarqc

// The SARQC/RQC objective (docs/methods.md §5.2, our reconstruction) against its defining
// identities.
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/calib/gram.h"
#include "sarqc/objective/objective.h"
#include "sarqc/objective/sarqc.h"
#include "sarqc/rounding/gptq.h"
#include "sarqc/rounding/rtn.h"
#include "test_support.h"

namespace sarqc {
namespace {

struct Calibrated {
  at::Tensor W, X;
  GramAccumulator gram{16, c10::kCPU};
};

Calibrated make_calibrated(uint64_t seed) {
  at::manual_seed(seed);
  Calibrated s;
  s.W = at::randn({6, 16});
  // Channels of very different magnitudes, so that saliencies differ.
  s.X = at::randn({300, 16}) * at::linspace(0.1, 3.0, 16).unsqueeze(0);
  for (int64_t b = 0; b < 3; ++b) s.gram.add(s.X.narrow(0, b * 100, 100), 1);
  return s;
}

ObjectiveOutput build(const Calibrated& s, const ObjectiveSettings& settings, double percdamp) {
  const PreparedMetric p = prepare_metric(s.gram.matrix(), s.W, percdamp, "m");
  return make_objective(settings)->build({p.weight, p.damped, &s.gram, p.mean_diag});
}

TEST(Sarqc, OnesSaliencyIsGptqWithRaisedDamping) {
  const Calibrated s = make_calibrated(1);
  ObjectiveSettings sarqc{"sarqc", 0.05, "ones", 0.5};
  const ObjectiveOutput a = build(s, sarqc, 0.01);
  const ObjectiveOutput b = build(s, ObjectiveSettings{}, 0.01 + 0.05);
  EXPECT_TRUE(at::allclose(a.metric, b.metric, 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(a.target, s.W));
  const QuantGrid grid{3, 8, true, false};
  const auto qa = GptqRounder().round(a.target.to(at::kDouble), a.metric.to(at::kDouble), grid, {});
  const auto qb = GptqRounder().round(b.target.to(at::kDouble), b.metric.to(at::kDouble), grid, {});
  EXPECT_TRUE(at::equal(qa.codes, qb.codes));
}

TEST(Sarqc, SaliencyChoicesAddTheirNormalisedDiagonal) {
  const Calibrated s = make_calibrated(2);
  const at::Tensor H = s.gram.matrix();
  const double lambda = 0.1, mean_diag = H.diagonal().mean().item<double>();
  const ObjectiveOutput plain = build(s, ObjectiveSettings{}, 0.01);
  // hdiag: M = H_d + λ_rel · diag(H)
  const at::Tensor hd = build(s, {"sarqc", lambda, "hdiag", 0.5}, 0.01).metric - plain.metric;
  // (Differences of fp32 metrics with entries near 2000: absolute tolerance 1e-3.)
  EXPECT_TRUE(at::allclose(hd, at::diag(lambda * H.diagonal()), 1e-5, 1e-3));
  // absmean(-pow): s_j = (mean_t |x_jt|)^a normalised to mean 1, computed here from X directly.
  for (double a : {1.0, 0.5}) {
    const char* name = a == 1.0 ? "absmean" : "absmean-pow";
    at::Tensor sal = s.X.abs().mean(0).pow(a);
    sal = sal / sal.mean();
    const at::Tensor added = build(s, {"sarqc", lambda, name, a}, 0.01).metric - plain.metric;
    EXPECT_TRUE(at::allclose(added, at::diag(lambda * mean_diag * sal), 1e-5, 1e-3)) << name;
  }
  // Σ_t |x_t| over T = 300 fp32 terms, then one division: relative error ≤ (T + 2)·2^-24.
  EXPECT_TRUE(at::allclose(s.gram.abs_mean().to(at::kDouble), s.X.to(at::kDouble).abs().mean(0),
                           302 * std::ldexp(1.0, -24), 0));
}

TEST(Sarqc, AnOverwhelmingDriftPenaltyGivesRoundToNearest) {
  // With M ≈ λ'·I the error feedback vanishes: GPTQ keeps every weight's nearest grid point.
  const Calibrated s = make_calibrated(3);
  const ObjectiveOutput o = build(s, {"sarqc", 1e7, "ones", 0.5}, 0.01);
  const QuantGrid grid{2, -1, true, false};
  const auto gptq = GptqRounder().round(o.target.to(at::kDouble), o.metric.to(at::kDouble), grid, {});
  const auto rtn = RtnRounder().round(s.W.to(at::kDouble), {}, grid, {});
  EXPECT_TRUE(at::equal(gptq.codes, rtn.codes));
}

TEST(Sarqc, ElementSaliencyIsAPerEntryPenaltyOrCollapsesPerColumn) {
  const Calibrated s = make_calibrated(5);
  const PreparedMetric p = prepare_metric(s.gram.matrix(), s.W, 0.01, "m");
  const ObjectiveSettings set{"sarqc", 0.1, "elem", 0.5};
  const auto objective = make_objective(set);
  // s_ij = |W_ij|·sqrt(H_jj) normalised to mean 1, computed here from H directly.
  at::Tensor sal = s.W.abs() * s.gram.matrix().diagonal().sqrt().unsqueeze(0);
  sal = sal / sal.mean();
  ObjectiveInput in{p.weight, p.damped, &s.gram, p.mean_diag, 0, "q", -1, true};
  const ObjectiveOutput entry = objective->build(in);
  EXPECT_TRUE(at::equal(entry.metric, p.damped));  // M and W_ref unchanged
  EXPECT_TRUE(at::equal(entry.target, p.weight));
  EXPECT_TRUE(at::allclose(entry.penalty.weight, 0.1 * p.mean_diag * sal, 1e-4, 1e-6));
  EXPECT_TRUE(at::equal(entry.penalty.anchor, p.weight));
  in.entry_penalty_supported = false;  // GPTQ: s_j = mean_i s_ij on the metric's diagonal
  const ObjectiveOutput column = objective->build(in);
  EXPECT_FALSE(column.penalty.weight.defined());
  EXPECT_TRUE(at::allclose(column.metric - p.damped, at::diag(0.1 * p.mean_diag * sal.mean(0)),
                           1e-5, 1e-3));
}

TEST(Sarqc, BadSettingsAreUsageErrors) {
  test::expect_error([] { make_objective({"sarqc", -1, "ones", 0.5}); }, ErrorKind::Usage,
                     "--lambda must be >= 0");
  test::expect_error([] { make_objective({"sarqc", 0.1, "weird", 0.5}); }, ErrorKind::Usage,
                     "--saliency 'weird'");
  test::expect_error([] { make_objective({"sarqc", 0.1, "absmean-pow", 0}); }, ErrorKind::Usage,
                     "--saliency-power");
  test::expect_error([] { make_objective({"plain", 0.1, "ones", 0.5}); }, ErrorKind::Usage,
                     "--lambda applies only to the sarqc objectives");
  test::expect_error([] { make_objective({"nope", 0, "ones", 0.5}); }, ErrorKind::Usage,
                     "--objective 'nope'");
}

}  // namespace
}  // namespace sarqc

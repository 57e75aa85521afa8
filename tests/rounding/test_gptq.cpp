// GPTQ against the closed-form OBS update (explicit inverse, one column at a time), its loss
// identity, act-order/static-group layouts, and RTN.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "rounding/problems.h"
#include "sarqc/objective/objective.h"
#include "sarqc/rounding/gptq.h"
#include "sarqc/rounding/rtn.h"

namespace sarqc {
namespace {

using Problem = test::RoundingProblem;
constexpr auto make_problem = test::make_rounding_problem;

// Optimal Brain Surgeon, column by column in natural order, with the inverse Hessian updated
// explicitly by Gaussian elimination of the quantized column (Frantar et al., eq. 2-3).
at::Tensor obs_reference(const Problem& p, const QuantGrid& grid) {
  at::Tensor W = p.W.clone(), Hinv = at::inverse(p.H), Q = at::zeros_like(W);
  const int64_t n = W.size(1);
  GroupParams params = find_params(p.W, grid);
  for (int64_t j = 0; j < n; ++j) {
    if (grid.group_size > 0 && j % grid.group_size == 0)
      params = find_params(W.narrow(1, j, grid.group_size), grid);
    const at::Tensor q = dequantize_codes(quantize_codes(W.select(1, j), params, grid.maxq()), params);
    Q.select(1, j).copy_(q);
    const at::Tensor err = (W.select(1, j) - q) / Hinv[j][j];
    W -= at::outer(err, Hinv[j]);  // columns <= j are done; only later ones matter
    Hinv = Hinv - at::outer(Hinv.select(1, j), Hinv[j]) / Hinv[j][j];
  }
  return Q;
}

double trace_loss(const at::Tensor& Q, const at::Tensor& T, const at::Tensor& M) {
  const at::Tensor d = Q - T;
  return (at::matmul(d, M) * d).sum().item<double>();
}

TEST(Gptq, EqualsClosedFormObsWithoutActOrder) {
  for (int64_t g : {-1, 4}) {
    const Problem p = make_problem(6, 12, 10 + g);
    const QuantGrid grid{3, g, true, false};
    for (int64_t block : {1, 5, 128}) {
      if (g > 0 && block % g != 0 && block != 1) continue;  // groups spanning blocks: see §4
      RoundingOptions o;
      o.block_size = block;
      const QuantizedLinear q = GptqRounder().round(p.W, p.H, grid, o);
      EXPECT_TRUE(at::allclose(q.dequantize().to(at::kDouble), obs_reference(p, grid), 0, 1e-6))
          << "g " << g << " block " << block;
    }
  }
}

TEST(Gptq, LossEqualsTraceFormWithActOrderGroupsAndStaticGroups) {
  const Problem p = make_problem(8, 16, 3);
  for (bool act_order : {false, true})
    for (bool static_groups : {false, true})
      for (int64_t g : {-1, 4, 8}) {
        const QuantGrid grid{2, g, g != 8, false};
        RoundingOptions o;
        o.act_order = act_order;
        o.static_groups = static_groups;
        o.block_size = 8;
        const QuantizedLinear q = GptqRounder().round(p.W, p.H, grid, o);
        const double expected = trace_loss(q.dequantize().to(at::kDouble), p.W, p.H);
        EXPECT_NEAR(q.loss, expected, 1e-6 * expected)
            << act_order << static_groups << " g " << g;
        const int64_t G = g > 0 ? 16 / g : 1;
        EXPECT_EQ(q.scales.sizes(), (std::vector<int64_t>{G, 8}));
        EXPECT_EQ(q.reordered(), act_order && !static_groups && g > 0);
        EXPECT_TRUE((q.codes >= 0).all().item<bool>() && (q.codes <= 3).all().item<bool>());
      }
}

TEST(Gptq, ActOrderGroupsFollowProcessingOrder) {
  Problem p = make_problem(4, 8, 5);
  // Make diag(H) strictly increasing so that act-order processes columns 7, 6, ..., 0.
  p.H += at::diag(at::arange(8, at::kDouble) * 100);
  RoundingOptions o;
  o.act_order = true;
  const QuantizedLinear q = GptqRounder().round(p.W, p.H, QuantGrid{4, 2, true, false}, o);
  const std::vector<int32_t> expected = {3, 3, 2, 2, 1, 1, 0, 0};
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(q.g_idx[i].item<int32_t>(), expected[i]);
}

TEST(Gptq, IdentityMetricReducesToRoundToNearest) {
  const Problem p = make_problem(5, 12, 7);
  const at::Tensor I = at::eye(12, at::kDouble);
  for (int64_t g : {-1, 4}) {
    const QuantGrid grid{3, g, false, false};
    const QuantizedLinear gptq = GptqRounder().round(p.W, I, grid, {});
    const QuantizedLinear rtn = RtnRounder().round(p.W, I, grid, {});
    EXPECT_TRUE(at::equal(gptq.codes, rtn.codes));
    EXPECT_TRUE(at::equal(gptq.scales, rtn.scales));
    EXPECT_NEAR(gptq.loss, rtn.loss, 1e-9);
  }
}

TEST(Gptq, GptqBeatsRtnOnItsOwnObjective) {
  const Problem p = make_problem(16, 32, 9);
  const QuantGrid grid{3, 8, true, false};
  const QuantizedLinear gptq = GptqRounder().round(p.W, p.H, grid, {});
  const QuantizedLinear rtn = RtnRounder().round(p.W, p.H, grid, {});
  EXPECT_LT(gptq.loss, rtn.loss);
}

TEST(Gptq, DeadColumnGivesTheSameCodesAsRemovingTheChannel) {
  // methods.md §1 and §9 item 11: an input channel that is always zero gets H_jj = 1 and
  // W[:, j] = 0; the other columns' codes are those of the problem without the channel.
  at::manual_seed(11);
  const int64_t n = 12, dead = 5;
  at::Tensor X = at::randn({64, n});
  X.select(1, dead).zero_();
  const at::Tensor W = at::randn({6, n});
  const at::Tensor H = 2.0 / 4 * at::matmul(X.t(), X);
  const PreparedMetric full = prepare_metric(H, W, /*percdamp=*/0, "m");
  EXPECT_EQ(full.dead_columns, 1);
  EXPECT_EQ(full.damped[dead][dead].item<float>(), 1.0f);
  EXPECT_TRUE((full.weight.select(1, dead) == 0).all().item<bool>());
  EXPECT_TRUE(at::equal(full.weight.narrow(1, 0, dead), W.narrow(1, 0, dead)));
  EXPECT_EQ(W.select(1, dead).abs().sum().item<float>() > 0, true);  // it was not zero before
  // Damping is relative to mean(diag H) after the dead entry became 1.
  const PreparedMetric damped = prepare_metric(H, W, 0.1, "m");
  const double mean = (H.diagonal().sum().item<double>() + 1) / n;
  EXPECT_NEAR(damped.damped[0][0].item<double>(), H[0][0].item<double>() + 0.1 * mean,
              1e-6 * mean);

  std::vector<int64_t> keep;
  for (int64_t j = 0; j < n; ++j)
    if (j != dead) keep.push_back(j);
  const at::Tensor idx = at::tensor(keep, at::kLong);
  const at::Tensor Xr = X.index_select(1, idx);
  const PreparedMetric reduced =
      prepare_metric(2.0 / 4 * at::matmul(Xr.t(), Xr), W.index_select(1, idx), 0, "m");
  const QuantGrid grid{3, -1, true, false};
  const QuantizedLinear a = GptqRounder().round(full.weight, full.damped, grid, {});
  const QuantizedLinear b = GptqRounder().round(reduced.weight, reduced.damped, grid, {});
  EXPECT_TRUE(at::equal(a.codes.index_select(1, idx), b.codes));
  EXPECT_TRUE((a.dequantize().select(1, dead) == 0).all().item<bool>());
}

TEST(Gptq, IndefiniteMetricIsAFactorizationFailure) {
  const Problem p = make_problem(4, 6, 11);
  at::Tensor bad = p.H.clone();
  bad[2][2] = -1.0;
  EXPECT_THROW(GptqRounder().round(p.W, bad, QuantGrid{4, -1, true, false}, {}),
               FactorizationFailed);
}

}  // namespace
}  // namespace sarqc

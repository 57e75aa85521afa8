// GPTQ against the closed-form OBS update (explicit inverse, one column at a time), its loss
// identity, act-order/static-group layouts, and RTN.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "rounding/problems.h"
#include "sarqc/objective/objective.h"
#include "sarqc/rounding/gptq.h"
#include "sarqc/rounding/rtn.h"
#include "sarqc/util/device.h"

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

// The reference GPTQ's structure (IST-DASLab gptq.py): U = chol(M⁻¹) upper, lazy block updates,
// and a group's parameters from the current values, which for columns past the block lack this
// block's updates. Natural column order.
at::Tensor lazy_block_reference(const Problem& p, const QuantGrid& grid, int64_t B) {
  at::Tensor W = p.W.clone(), Q = at::zeros_like(W);
  const at::Tensor U = at::linalg_cholesky(at::inverse(p.H), /*upper=*/true);
  const int64_t n = W.size(1), g = grid.group_size;
  GroupParams params = find_params(p.W, grid);
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(i1 + B, n), count = i2 - i1;
    at::Tensor W1 = W.narrow(1, i1, count).clone(), E1 = at::zeros_like(W1);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t j = i1 + i;
      if (g > 0 && j % g == 0) {
        const int64_t in_block = std::min(g, count - i);
        at::Tensor cols = W1.narrow(1, i, in_block);
        if (in_block < g) cols = at::cat({cols, W.narrow(1, i2, g - in_block)}, 1);
        params = find_params(cols, grid);
      }
      const at::Tensor w = W1.select(1, i);
      const at::Tensor q = dequantize_codes(quantize_codes(w, params, grid.maxq()), params);
      Q.select(1, j).copy_(q);
      const at::Tensor e = (w - q) / U[j][j];
      W1.narrow(1, i, count - i) -= at::outer(e, U[j].narrow(0, j, count - i));
      E1.select(1, i).copy_(e);
    }
    if (i2 < n) W.narrow(1, i2, n - i2) -= at::matmul(E1, U.narrow(0, i1, count).narrow(1, i2, n - i2));
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

TEST(Gptq, GroupsSpanningBlocksFollowTheLazyReference) {
  // Blocks of 5 with groups of 4 (and 8: a group covers two blocks): the parameters of a group
  // that runs past its block see the later columns without that block's updates.
  for (int64_t g : {4, 8}) {
    const Problem p = make_problem(6, 16, 20 + g);
    const QuantGrid grid{3, g, true, false};
    for (int64_t block : {3, 5}) {
      RoundingOptions o;
      o.block_size = block;
      const QuantizedLinear q = GptqRounder().round(p.W, p.H, grid, o);
      EXPECT_TRUE(at::allclose(q.dequantize().to(at::kDouble),
                               lazy_block_reference(p, grid, block), 0, 1e-6))
          << "g " << g << " block " << block;
    }
  }
}

TEST(Gptq, FusedCpuKernelDecidesLikeThePerColumnLoop) {
  // The CPU kernel and the per-column ATen loop (the CUDA path) perform the same element
  // operations: identical codes and parameters, in fp64 and fp32.
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    const Problem p = make_problem(12, 24, 31);
    const at::Tensor W = p.W.to(dtype), H = p.H.to(dtype);
    for (bool act_order : {false, true})
      for (bool static_groups : {false, true})
        for (int64_t g : {-1, 4, 8})
          for (int64_t block : {1, 5, 128}) {
            RoundingOptions fused, loop;
            fused.act_order = loop.act_order = act_order;
            fused.static_groups = loop.static_groups = static_groups;
            fused.block_size = loop.block_size = block;
            loop.fused_cpu_gptq = false;
            const QuantGrid grid{3, g, g != 8, false};
            const QuantizedLinear a = GptqRounder().round(W, H, grid, fused);
            const QuantizedLinear b = GptqRounder().round(W, H, grid, loop);
            const std::string where = ::testing::PrintToString(
                std::make_tuple(dtype, act_order, static_groups, g, block));
            EXPECT_TRUE(at::equal(a.codes, b.codes)) << where;
            EXPECT_TRUE(at::equal(a.scales, b.scales)) << where;
            EXPECT_NEAR(a.loss, b.loss, 1e-5 * b.loss) << where;
          }
  }
}

TEST(Gptq, CudaDecidesLikeTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device in this build/machine";
  // fp64 on both devices: the factorizations agree to ~1e-12, far from any rounding boundary of
  // these random problems, so the codes must be identical.
  const Problem p = make_problem(16, 64, 41);
  const c10::Device cuda(c10::kCUDA, 0);
  for (bool act_order : {false, true}) {
    RoundingOptions o;
    o.act_order = act_order;
    o.block_size = 16;
    const QuantGrid grid{4, 16, true, false};
    const QuantizedLinear cpu = GptqRounder().round(p.W, p.H, grid, o);
    const QuantizedLinear gpu = GptqRounder().round(p.W.to(cuda), p.H.to(cuda), grid, o);
    EXPECT_TRUE(gpu.codes.is_cuda());
    EXPECT_TRUE(at::equal(gpu.codes.cpu(), cpu.codes)) << act_order;
    EXPECT_NEAR(gpu.loss, cpu.loss, 1e-9 * cpu.loss) << act_order;
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

// GPTQ against the closed-form OBS update (explicit inverse, one column at a time), its loss
// identity, act-order/static-group layouts, and RTN.
#include <algorithm>
#include <numeric>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "rounding/problems.h"
#include "sarqc/objective/objective.h"
#include "sarqc/rounding/column_order.h"
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
// and a group's parameters from find_params(W[:, j:j+g]): W, not the block's working copy W1, so
// the group's in-block columns are read at their block-start values and later columns as the
// lazy update left them. `current_in_block` reads W1 instead for the in-block columns (sarqc's
// default, which equals the non-lazy algorithm when groups do not span blocks). Natural order.
at::Tensor lazy_block_reference(const Problem& p, const QuantGrid& grid, int64_t B,
                                bool current_in_block) {
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
        at::Tensor cols = W.narrow(1, j, g).clone();
        const int64_t in_block = std::min(g, count - i);
        if (current_in_block) cols.narrow(1, 0, in_block).copy_(W1.narrow(1, i, in_block));
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

// Group-aware order written out plainly: groups by descending max diag (ties: lower group
// first), columns inside a group by descending diag (ties: lower column first).
std::vector<int64_t> gar_order(const at::Tensor& diag, int64_t g) {
  const int64_t n = diag.size(0);
  std::vector<double> d(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) d[static_cast<size_t>(j)] = diag[j].item<double>();
  std::vector<int64_t> groups(static_cast<size_t>(n / g));
  std::iota(groups.begin(), groups.end(), 0);
  auto group_max = [&](int64_t k) {
    return *std::max_element(d.begin() + k * g, d.begin() + (k + 1) * g);
  };
  std::stable_sort(groups.begin(), groups.end(),
                   [&](int64_t a, int64_t b) { return group_max(a) > group_max(b); });
  std::vector<int64_t> order;
  for (const int64_t k : groups) {
    std::vector<int64_t> cols(static_cast<size_t>(g));
    std::iota(cols.begin(), cols.end(), k * g);
    std::stable_sort(cols.begin(), cols.end(), [&](int64_t a, int64_t b) {
      return d[static_cast<size_t>(a)] > d[static_cast<size_t>(b)];
    });
    order.insert(order.end(), cols.begin(), cols.end());
  }
  return order;
}

// The textbook algorithm: natural order, a group's parameters from its columns' current values.
RoundingOptions textbook() {
  RoundingOptions o;
  o.order = ColumnOrder::natural;
  o.block_start_group_params = false;
  return o;
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
      RoundingOptions o = textbook();
      o.block_size = block;
      const QuantizedLinear q = GptqRounder().round(p.W, p.H, grid, o);
      EXPECT_TRUE(at::allclose(q.dequantize().to(at::kDouble), obs_reference(p, grid), 0, 1e-6))
          << "g " << g << " block " << block;
    }
  }
}

TEST(Gptq, GroupParamsFollowTheReferenceAndTheNonLazyValues) {
  // Groups starting inside a block (g 4 and 8 with blocks of 8 and 16) and groups running past
  // their block (blocks of 3 and 5). block-start: the reference reads the group's columns from
  // W. current: the in-block columns' current values (the non-lazy algorithm's when no group
  // runs past its block), the later ones as the lazy update left them.
  for (int64_t g : {4, 8})
    for (int64_t block : {3, 5, 8, 16}) {
      const Problem p = make_problem(6, 16, 20 + g);
      const QuantGrid grid{3, g, true, false};
      RoundingOptions o = textbook();
      o.block_size = block;
      const at::Tensor current =
          GptqRounder().round(p.W, p.H, grid, o).dequantize().to(at::kDouble);
      o.block_start_group_params = true;
      const at::Tensor block_start =
          GptqRounder().round(p.W, p.H, grid, o).dequantize().to(at::kDouble);
      const at::Tensor reference = lazy_block_reference(p, grid, block, false);
      const at::Tensor hybrid = lazy_block_reference(p, grid, block, true);
      const std::string where = "g " + std::to_string(g) + " block " + std::to_string(block);
      EXPECT_TRUE(at::allclose(block_start, reference, 0, 1e-6)) << where;
      EXPECT_TRUE(at::allclose(current, hybrid, 0, 1e-6)) << where;
      if (block % g == 0)  // no group runs past its block: the non-lazy algorithm's values
        EXPECT_TRUE(at::allclose(current, obs_reference(p, grid), 0, 1e-6)) << where;
      if (block % g == 0 && block > g)  // in-block group starts: the two conventions differ
        EXPECT_FALSE(at::allclose(hybrid, reference, 0, 1e-6));
    }
}

TEST(ColumnOrder, GroupAwareKeepsGroupsWholeAndSortsByTheirLargestDiagonal) {
  at::manual_seed(3);
  for (int64_t g : {1, 4, 6, 24}) {
    at::Tensor diag = at::rand({24}, at::kDouble);
    diag[5] = diag[7];  // a tie inside a group and, for g = 1, between groups
    const at::Tensor perm = processing_order(diag, g, ColumnOrder::group_aware);
    const std::vector<int64_t> expected = gar_order(diag, g);
    EXPECT_TRUE(at::equal(perm, at::tensor(expected, at::kLong))) << g;
  }
  const at::Tensor diag = at::rand({12}, at::kDouble);
  EXPECT_TRUE(at::equal(processing_order(diag, -1, ColumnOrder::group_aware),
                        processing_order(diag, -1, ColumnOrder::act)));
  EXPECT_TRUE(at::equal(processing_order(diag, 4, ColumnOrder::natural), at::arange(12, at::kLong)));
}

TEST(Gptq, GroupAwareOrderIsNaturalGptqOnThePermutedProblemWithATrivialGIdx) {
  // GAR keeps each group's columns together, so GPTQ in GAR order is the closed-form OBS of the
  // problem whose columns (and H's rows and columns) are permuted into that order, its groups
  // the permuted problem's contiguous groups; written back in natural order with g_idx = j / g.
  for (const bool block_start : {false, true})
    for (int64_t g : {4, 8}) {
      Problem p = make_problem(7, 24, 50 + g);
      p.H += at::diag(at::rand({24}, at::kDouble) * p.H.diagonal().mean());  // distinct diag
      const QuantGrid grid{3, g, false, false};
      const std::vector<int64_t> order = gar_order(p.H.diagonal(), g);
      const at::Tensor perm = at::tensor(order, at::kLong);
      EXPECT_FALSE(at::equal(perm, at::arange(24, at::kLong)));
      const Problem permuted{p.W.index_select(1, perm),
                             p.H.index_select(0, perm).index_select(1, perm)};
      RoundingOptions o = textbook();
      o.order = ColumnOrder::group_aware;
      o.block_size = 8;  // a multiple of g: with either convention, OBS's values
      o.block_start_group_params = block_start;
      const QuantizedLinear q = GptqRounder().round(p.W, p.H, grid, o);
      const at::Tensor expected =
          (block_start ? lazy_block_reference(permuted, grid, 8, false) : obs_reference(permuted, grid))
              .index_select(1, at::argsort(perm));
      EXPECT_TRUE(at::allclose(q.dequantize().to(at::kDouble), expected, 0, 1e-6)) << g;
      EXPECT_FALSE(q.reordered()) << g;
      EXPECT_TRUE(at::equal(q.g_idx, at::div(at::arange(24, at::kInt), g, "floor"))) << g;
      // Each natural group's scale is the scale its columns were quantized with.
      const at::Tensor deq = q.dequantize().to(at::kDouble);
      for (int64_t k = 0; k < 24 / g; ++k) {
        const at::Tensor steps = deq.narrow(1, k * g, g) / q.scales.select(0, k).to(at::kDouble).unsqueeze(1);
        EXPECT_TRUE(at::allclose(steps, steps.round(), 0, 1e-6)) << g << " group " << k;
      }
      const double expected_loss = trace_loss(deq, p.W, p.H);
      EXPECT_NEAR(q.loss, expected_loss, 1e-6 * expected_loss);
    }
}

TEST(Gptq, FusedCpuKernelDecidesLikeThePerColumnLoop) {
  // The CPU kernel and the per-column ATen loop (the CUDA path) perform the same element
  // operations: identical codes and parameters, in fp64 and fp32.
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    const Problem p = make_problem(12, 24, 31);
    const at::Tensor W = p.W.to(dtype), H = p.H.to(dtype);
    for (ColumnOrder order : {ColumnOrder::natural, ColumnOrder::act, ColumnOrder::group_aware})
      for (bool static_groups : {false, true})
        for (int64_t g : {-1, 4, 8})
          for (int64_t block : {1, 5, 128})
            for (bool block_start : {false, true}) {
              RoundingOptions fused = textbook(), loop = textbook();
              fused.block_start_group_params = loop.block_start_group_params = block_start;
              fused.order = loop.order = order;
              fused.static_groups = loop.static_groups = static_groups;
              fused.block_size = loop.block_size = block;
              loop.fused_cpu_gptq = false;
              const QuantGrid grid{3, g, g != 8, false};
              const QuantizedLinear a = GptqRounder().round(W, H, grid, fused);
              const QuantizedLinear b = GptqRounder().round(W, H, grid, loop);
              const std::string where = ::testing::PrintToString(
                  std::make_tuple(dtype, column_order_name(order), static_groups, g, block,
                                  block_start));
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
  for (ColumnOrder order : {ColumnOrder::natural, ColumnOrder::act, ColumnOrder::group_aware}) {
    RoundingOptions o;  // block-start group params, the default
    o.order = order;
    o.block_size = 16;
    const QuantGrid grid{4, 16, true, false};
    const QuantizedLinear cpu = GptqRounder().round(p.W, p.H, grid, o);
    const QuantizedLinear gpu = GptqRounder().round(p.W.to(cuda), p.H.to(cuda), grid, o);
    EXPECT_TRUE(gpu.codes.is_cuda());
    EXPECT_TRUE(at::equal(gpu.codes.cpu(), cpu.codes)) << column_order_name(order);
    EXPECT_NEAR(gpu.loss, cpu.loss, 1e-9 * cpu.loss) << column_order_name(order);
  }
}

TEST(Gptq, LossEqualsTraceFormWithActOrderGroupsAndStaticGroups) {
  const Problem p = make_problem(8, 16, 3);
  for (ColumnOrder order : {ColumnOrder::natural, ColumnOrder::act, ColumnOrder::group_aware})
    for (bool static_groups : {false, true})
      for (int64_t g : {-1, 4, 8}) {
        const QuantGrid grid{2, g, g != 8, false};
        RoundingOptions o = textbook();
        o.order = order;
        o.static_groups = static_groups;
        o.block_size = 8;
        const QuantizedLinear q = GptqRounder().round(p.W, p.H, grid, o);
        const double expected = trace_loss(q.dequantize().to(at::kDouble), p.W, p.H);
        EXPECT_NEAR(q.loss, expected, 1e-6 * expected)
            << column_order_name(order) << static_groups << " g " << g;
        const int64_t G = g > 0 ? 16 / g : 1;
        EXPECT_EQ(q.scales.sizes(), (std::vector<int64_t>{G, 8}));
        EXPECT_EQ(q.reordered(), order == ColumnOrder::act && !static_groups && g > 0);
        EXPECT_TRUE((q.codes >= 0).all().item<bool>() && (q.codes <= 3).all().item<bool>());
      }
}

TEST(Gptq, ActOrderGroupsFollowProcessingOrder) {
  Problem p = make_problem(4, 8, 5);
  // diag(H) ranks the columns 7, 5, 3, 1, 6, 4, 2, 0: act-order's groups of 2 are (7, 5),
  // (3, 1), (6, 4), (2, 0), each mixing two natural groups.
  p.H += at::diag(at::tensor({100., 500., 200., 600., 300., 700., 400., 800.}, at::kDouble));
  RoundingOptions o = textbook();
  o.order = ColumnOrder::act;
  const QuantizedLinear q = GptqRounder().round(p.W, p.H, QuantGrid{4, 2, true, false}, o);
  const std::vector<int32_t> expected = {3, 1, 3, 1, 2, 0, 2, 0};
  for (int64_t i = 0; i < 8; ++i) EXPECT_EQ(q.g_idx[i].item<int32_t>(), expected[i]);
}

TEST(Gptq, ActOrderThatKeepsGroupsWholeIsWrittenInNaturalGroupOrder) {
  // Strictly increasing diag: act-order processes 7, 6, ..., 0, so each processing group is a
  // natural one; the scales go to their natural group and g_idx stays trivial.
  Problem p = make_problem(4, 8, 5);
  p.H += at::diag(at::arange(8, at::kDouble) * 100);
  RoundingOptions o = textbook();
  o.order = ColumnOrder::act;
  const QuantGrid grid{4, 2, true, false};
  const QuantizedLinear q = GptqRounder().round(p.W, p.H, grid, o);
  EXPECT_FALSE(q.reordered());
  const at::Tensor expected =
      obs_reference({p.W.flip(1), p.H.flip({0, 1})}, grid).flip(1);  // natural GPTQ, reversed
  EXPECT_TRUE(at::allclose(q.dequantize().to(at::kDouble), expected, 0, 1e-6));
}

TEST(Gptq, IdentityMetricReducesToRoundToNearest) {
  const Problem p = make_problem(5, 12, 7);
  const at::Tensor I = at::eye(12, at::kDouble);
  for (int64_t g : {-1, 4}) {
    const QuantGrid grid{3, g, false, false};
    const QuantizedLinear gptq = GptqRounder().round(p.W, I, grid, textbook());
    const QuantizedLinear rtn = RtnRounder().round(p.W, I, grid, {});
    EXPECT_TRUE(at::equal(gptq.codes, rtn.codes));
    EXPECT_TRUE(at::equal(gptq.scales, rtn.scales));
    EXPECT_NEAR(gptq.loss, rtn.loss, 1e-9);
  }
}

TEST(Gptq, GptqBeatsRtnOnItsOwnObjective) {
  const Problem p = make_problem(16, 32, 9);
  const QuantGrid grid{3, 8, true, false};
  const QuantizedLinear gptq = GptqRounder().round(p.W, p.H, grid, textbook());
  const QuantizedLinear rtn = RtnRounder().round(p.W, p.H, grid, {});
  EXPECT_LT(gptq.loss, rtn.loss);
}

TEST(Gptq, DeadColumnGivesTheSameCodesAsRemovingTheChannel) {
  // docs/methods.md §1 and §9 item 11: an input channel that is always zero gets H_jj = 1 and
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
  const QuantizedLinear a = GptqRounder().round(full.weight, full.damped, grid, textbook());
  const QuantizedLinear b = GptqRounder().round(reduced.weight, reduced.damped, grid, textbook());
  EXPECT_TRUE(at::equal(a.codes.index_select(1, idx), b.codes));
  EXPECT_TRUE((a.dequantize().select(1, dead) == 0).all().item<bool>());
}

TEST(Gptq, IndefiniteMetricIsAFactorizationFailure) {
  const Problem p = make_problem(4, 6, 11);
  at::Tensor bad = p.H.clone();
  bad[2][2] = -1.0;
  EXPECT_THROW(GptqRounder().round(p.W, bad, QuantGrid{4, -1, true, false}, textbook()),
               FactorizationFailed);
}

}  // namespace
}  // namespace sarqc

// Successive rounding and beam search (docs/methods.md §6.1, §6.2, §9 items 3-5).
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "rounding/problems.h"
#include "sarqc/rounding/column_order.h"
#include "sarqc/rounding/gptq.h"
#include "sarqc/rounding/successive.h"

namespace sarqc {
namespace {

using Problem = test::RoundingProblem;
constexpr auto make_problem = test::make_rounding_problem;

// The three decoders behind successive/beam on the CPU: the fused kernel, and with it switched
// off the greedy loop (width 1) or the batched decoder.
std::vector<RoundingOptions> every_decoder() {
  RoundingOptions fused, greedy, batched;
  greedy.fused_cpu_beam = batched.fused_cpu_beam = false;
  batched.greedy_fast_path = false;
  return {fused, greedy, batched};
}

double row_loss(const at::Tensor& Q, const at::Tensor& T, const at::Tensor& M) {
  const at::Tensor d = Q - T;
  return (at::matmul(d, M) * d).sum().item<double>();
}

// Row r's objective for dequantized values `row`: (row − W_r) H (row − W_r)ᵀ, plus the
// element-wise penalty when one is given.
double row_objective(const Problem& p, int64_t r, const at::Tensor& row, const EntryPenalty* pen) {
  const at::Tensor d = (row - p.W[r]).unsqueeze(0);
  double v = (at::matmul(d, p.H) * d).sum().item<double>();
  if (pen) v += (pen->weight[r] * (pen->anchor[r] - row).pow(2)).sum().item<double>();
  return v;
}

// The smallest row objective over all 4^n code vectors of a 2-bit row with per-row `params`.
double exhaustive_best(const Problem& p, const GroupParams& params, int64_t r,
                       const EntryPenalty* pen) {
  const int64_t n = p.W.size(1);
  double best = std::numeric_limits<double>::infinity();
  for (int64_t v = 0; v < (int64_t{1} << (2 * n)); ++v) {
    at::Tensor codes = at::empty({n}, at::kDouble);
    for (int64_t c = 0; c < n; ++c) codes[c] = double((v >> (2 * c)) & 3);
    best = std::min(best, row_objective(p, r, params.scale[r] * (codes - params.zero[r]), pen));
  }
  return best;
}

TEST(Successive, EqualsGptqRunInTheReverseOrder) {
  // Per-row grids fixed from the target: greedy back-to-front over ascending diag(M) is GPTQ
  // front-to-back over descending diag(M), i.e. act-order.
  for (int bits : {2, 3, 4}) {
    const Problem p = make_problem(7, 20, 100 + bits);
    const QuantGrid grid{bits, -1, true, false};
    RoundingOptions o;
    o.order = ColumnOrder::act;
    const QuantizedLinear gptq = GptqRounder().round(p.W, p.H, grid, o);
    const QuantizedLinear sr = SuccessiveRounder(false).round(p.W, p.H, grid, o);
    EXPECT_TRUE(at::equal(gptq.codes, sr.codes)) << bits;
    EXPECT_NEAR(gptq.loss, sr.loss, 1e-9 * gptq.loss);
  }
}

TEST(Successive, ScoreEqualsTheTraceLossForGroupsBlocksAndBeams) {
  const Problem p = make_problem(9, 24, 3);
  for (int64_t g : {-1, 6, 8})
    for (bool static_groups : {false, true})
      for (int64_t block : {5, 128})
        for (int64_t K : {1, 3})
          for (RoundingOptions o : every_decoder()) {
            o.order = ColumnOrder::act;
            o.static_groups = static_groups;
            o.block_size = block;
            o.beam_width = K;
            const QuantGrid grid{3, g, g != 8, false};
            const QuantizedLinear q = SuccessiveRounder(true).round(p.W, p.H, grid, o);
            const double e = row_loss(q.dequantize().to(at::kDouble), p.W, p.H);
            EXPECT_NEAR(q.loss, e, 1e-9 * e) << g << static_groups << block << K;
            EXPECT_EQ(q.reordered(), g > 0 && !static_groups);
          }
}

TEST(Successive, GroupAwareOrderIsNaturalOrderOnThePermutedProblem) {
  // GAR keeps groups whole: decoding in GAR order is decoding the column-permuted problem in
  // natural order; written back with natural groups and a trivial g_idx.
  const Problem p = make_problem(9, 24, 13);
  for (int64_t g : {6, 8})
    for (int64_t K : {1, 3})
      for (RoundingOptions o : every_decoder()) {
        const QuantGrid grid{3, g, true, false};
        o.beam_width = K;
        o.order = ColumnOrder::group_aware;
        const at::Tensor perm = processing_order(p.H.diagonal(), g, ColumnOrder::group_aware);
        const QuantizedLinear gar = SuccessiveRounder(true).round(p.W, p.H, grid, o);
        o.order = ColumnOrder::natural;
        const QuantizedLinear natural = SuccessiveRounder(true).round(
            p.W.index_select(1, perm), p.H.index_select(0, perm).index_select(1, perm), grid, o);
        EXPECT_FALSE(gar.reordered());
        EXPECT_FALSE(natural.reordered());
        EXPECT_TRUE(at::equal(gar.dequantize().index_select(1, perm), natural.dequantize()))
            << g << " " << K;
        EXPECT_NEAR(gar.loss, natural.loss, 1e-9 * natural.loss);
      }
}

TEST(Beam, WidthOneIsTheGreedyDecoder) {
  const Problem p = make_problem(12, 32, 5);
  const QuantGrid grid{2, 8, true, false};
  const std::vector<RoundingOptions> decoders = every_decoder();
  const QuantizedLinear greedy = SuccessiveRounder(false).round(p.W, p.H, grid, decoders[1]);
  // The fused and batched beam decoders at width 1, with their tie rules.
  for (RoundingOptions o : {decoders[0], decoders[2]}) {
    o.beam_width = 1;
    const QuantizedLinear k1 = SuccessiveRounder(true).round(p.W, p.H, grid, o);
    EXPECT_TRUE(at::equal(greedy.codes, k1.codes));
    EXPECT_NEAR(greedy.loss, k1.loss, 1e-9 * greedy.loss);
  }
}

TEST(Beam, RowChunkingChangesNothing) {
  const Problem p = make_problem(12, 32, 6);
  const QuantGrid grid{2, 8, true, false};
  RoundingOptions o;
  o.beam_width = 4;
  o.block_size = 7;
  const QuantizedLinear whole = SuccessiveRounder(true).round(p.W, p.H, grid, o);
  for (bool fused : {true, false}) {
    o.fused_cpu_beam = fused;
    o.beam_budget_bytes = 1;  // one row per chunk
    EXPECT_TRUE(at::equal(whole.codes, SuccessiveRounder(true).round(p.W, p.H, grid, o).codes));
    o.beam_budget_bytes = int64_t{1} << 30;
    o.beam_rows = 5;  // chunks of 5, 5 and 2 rows
    EXPECT_TRUE(at::equal(whole.codes, SuccessiveRounder(true).round(p.W, p.H, grid, o).codes));
    o.beam_rows = 0;
  }
}

TEST(Beam, FusedCpuKernelMakesTheBatchedDecodersChoices) {
  // The fused kernel rebuilds each beam's corrected targets from the best beam's plus their
  // differing decisions; the batched decoder carries every beam's in full. In fp64 both must
  // pick the same codes, with and without the element-wise penalty, at every width.
  for (int bits : {2, 3, 4})
    for (int64_t K : {1, 2, 4, 9}) {
      const Problem p = make_problem(10, 40, 300 + bits * 10 + K);
      const QuantGrid grid{bits, bits == 3 ? 8 : -1, bits != 4, false};
      const EntryPenalty pen{at::rand_like(p.W) * 0.5, p.W + 0.1 * at::randn_like(p.W)};
      for (bool penalized : {false, true}) {
        RoundingOptions o;
        o.greedy_fast_path = false;
        o.beam_width = K;
        o.block_size = 16;  // several blocks, so the cross-block reconstruction is exercised
        const SuccessiveRounder beam(true);
        const auto fused = penalized ? beam.round_penalized(p.W, p.H, grid, o, pen)
                                     : beam.round(p.W, p.H, grid, o);
        o.fused_cpu_beam = false;
        const auto batched = penalized ? beam.round_penalized(p.W, p.H, grid, o, pen)
                                       : beam.round(p.W, p.H, grid, o);
        EXPECT_TRUE(at::equal(fused.codes, batched.codes)) << bits << " " << K << penalized;
        EXPECT_NEAR(fused.loss, batched.loss, 1e-9 * batched.loss) << bits << " " << K;
      }
    }
}

TEST(Beam, WiderBeamsFindLowerLossOnAverage) {
  // A wider beam is not better on every row (pruning is greedy too), but over many rows it
  // finds lower E(Q) than the greedy decoder.
  double greedy = 0, beam = 0;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    const Problem p = make_problem(16, 32, 40 + seed);
    const QuantGrid grid{2, -1, true, false};
    RoundingOptions o;
    greedy += SuccessiveRounder(false).round(p.W, p.H, grid, o).loss;
    o.beam_width = 8;
    beam += SuccessiveRounder(true).round(p.W, p.H, grid, o).loss;
  }
  EXPECT_LT(beam, greedy);
}

TEST(Beam, FullWidthEqualsExhaustiveSearch) {
  // n = 5 columns, 2 bits: 4^5 = 1024 code vectors per row, all enumerated here.
  const Problem p = make_problem(4, 5, 9);
  const QuantGrid grid{2, -1, true, false};
  RoundingOptions o;
  o.beam_width = 1024;
  const QuantizedLinear beam = SuccessiveRounder(true).round(p.W, p.H, grid, o);
  const GroupParams params = find_params(p.W, grid);
  for (int64_t r = 0; r < 4; ++r) {
    const double best = exhaustive_best(p, params, r, nullptr);
    const double got = row_objective(p, r, beam.dequantize().to(at::kDouble)[r], nullptr);
    EXPECT_NEAR(got, best, 1e-9 * best) << r;
  }
}

// Element-wise SARQC as per-entry regularised rounding (docs/methods.md §5.2, §9 item 10).

TEST(EntryPenalty, ZeroWeightIsPlainSuccessiveRounding) {
  const Problem p = make_problem(6, 16, 21);
  const QuantGrid grid{3, 8, true, false};
  const EntryPenalty none{at::zeros_like(p.W), p.W};
  for (bool beam : {false, true}) {
    RoundingOptions o;
    const auto plain = SuccessiveRounder(beam).round(p.W, p.H, grid, o);
    const auto pen = SuccessiveRounder(beam).round_penalized(p.W, p.H, grid, o, none);
    EXPECT_TRUE(at::equal(plain.codes, pen.codes)) << beam;
  }
}

TEST(EntryPenalty, ReportedLossIsTheExactPenalizedObjective) {
  const Problem p = make_problem(6, 16, 22);
  const QuantGrid grid{2, -1, true, false};
  // A target shifted away from W (as the interp objectives do), pulled back toward W.
  const at::Tensor target = p.W + 0.3 * at::randn_like(p.W);
  const EntryPenalty pen{at::rand_like(p.W) * 5.0, p.W};
  for (bool beam : {false, true})
    for (const RoundingOptions& o : every_decoder()) {
      const auto q = SuccessiveRounder(beam).round_penalized(target, p.H, grid, o, pen);
      const at::Tensor Q = q.dequantize().to(at::kDouble);
      const at::Tensor d = Q - target;
      const double expected = (at::matmul(d, p.H) * d).sum().item<double>() +
                              (pen.weight * (pen.anchor - Q).pow(2)).sum().item<double>();
      EXPECT_NEAR(q.loss, expected, 1e-9 * expected) << beam;
    }
}

TEST(EntryPenalty, FullWidthBeamFindsThePenalizedOptimum) {
  const Problem p = make_problem(3, 5, 23);
  const QuantGrid grid{2, -1, true, false};
  const EntryPenalty pen{at::rand_like(p.W) * 20.0, p.W + 0.2 * at::randn_like(p.W)};
  RoundingOptions o;
  o.beam_width = 1024;
  const auto q = SuccessiveRounder(true).round_penalized(p.W, p.H, grid, o, pen);
  const GroupParams params = find_params(p.W, grid);
  for (int64_t r = 0; r < 3; ++r) {
    const double best = exhaustive_best(p, params, r, &pen);
    const double got = row_objective(p, r, q.dequantize().to(at::kDouble)[r], &pen);
    EXPECT_NEAR(got, best, 1e-9 * best) << r;
  }
}

TEST(EntryPenalty, AnOverwhelmingPenaltyRoundsEachEntryToNearest) {
  const Problem p = make_problem(6, 16, 24);
  const QuantGrid grid{3, -1, true, false};
  const auto q = SuccessiveRounder(false).round_penalized(
      p.W, p.H, grid, {}, EntryPenalty{at::full_like(p.W, 1e9), p.W});
  const GroupParams params = find_params(p.W, grid);
  EXPECT_TRUE(at::equal(q.codes.to(at::kDouble), quantize_codes(p.W, params, grid.maxq())));
}

}  // namespace
}  // namespace sarqc

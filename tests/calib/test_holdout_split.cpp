// The held-out split of --lambda auto (calib/holdout_split.h) and the fold statistics the capture
// gathers with it: the folds partition the tokens by the split's pieces, whatever the batches,
// and each fold's Gram is the sum over exactly its tokens (dense modules and routed experts).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <numeric>
#include <set>
#include <vector>

#include "sarqc/calib/group_statistics.h"
#include "sarqc/calib/holdout_split.h"
#include "sarqc/calib/layer_stages.h"
#include "sarqc/calib/module_groups.h"
#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/rotary.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "calib/one_layer_config.h"
#include "test_support.h"

namespace sarqc {
namespace {

TEST(HoldoutSplit, ManyWindowsSplitWholeWindowsInHalves) {
  const HoldoutSplit split(17, 32, 4);
  EXPECT_EQ(split.pieces_per_window(), 1);
  EXPECT_EQ(split.piece_length(), 32);
  int fold1 = 0;
  for (int64_t w = 0; w < 17; ++w) fold1 += split.fold(w, 0);
  EXPECT_EQ(fold1, 9);  // ⌊17/2⌋ pieces in fold 0, the rest in fold 1
  // The seed decides; the same seed gives the same split.
  const HoldoutSplit same(17, 32, 4), other(17, 32, 5);
  int differ = 0;
  for (int64_t w = 0; w < 17; ++w) {
    EXPECT_EQ(split.fold(w, 0), same.fold(w, 0));
    differ += split.fold(w, 0) != other.fold(w, 0);
  }
  EXPECT_GT(differ, 0);
}

TEST(HoldoutSplit, FewWindowsSplitIntoPiecesOfContiguousTokens) {
  for (const auto& [windows, seqlen, per_window, length] : std::vector<std::array<int64_t, 4>>{
           {1, 128, 4, 32}, {2, 64, 2, 32}, {3, 10, 2, 5}, {1, 3, 3, 1}, {1, 10, 4, 3}}) {
    const HoldoutSplit split(windows, seqlen, 0);
    EXPECT_EQ(split.pieces_per_window(), per_window) << windows << " x " << seqlen;
    EXPECT_EQ(split.piece_length(), length) << windows << " x " << seqlen;
    const at::Tensor rows = split.row_folds(0, windows, c10::kCPU);
    ASSERT_EQ(rows.numel(), windows * seqlen);
    const std::array<int64_t, 2> pieces = split.pieces(0, windows);
    EXPECT_EQ(pieces[0], windows * per_window / 2);
    EXPECT_EQ(pieces[0] + pieces[1], windows * per_window);
    for (int64_t w = 0; w < windows; ++w)
      for (int64_t t = 0; t < seqlen; ++t)
        EXPECT_EQ(rows[w * seqlen + t].item<bool>(), split.fold(w, t / length) == 1);
  }
}

TEST(HoldoutSplit, RowsOfAnyBatchingAreTheRowsOfTheWhole) {
  const HoldoutSplit split(7, 5, 11);
  const at::Tensor whole = split.row_folds(0, 7, c10::kCPU);
  const at::Tensor batched =
      at::cat({split.row_folds(0, 2, c10::kCPU), split.row_folds(2, 4, c10::kCPU),
               split.row_folds(6, 1, c10::kCPU)});
  EXPECT_TRUE(at::equal(whole, batched));
  const auto a = split.pieces(0, 2), b = split.pieces(2, 5), all = split.pieces(0, 7);
  EXPECT_EQ(a[0] + b[0], all[0]);
  EXPECT_EQ(a[1] + b[1], all[1]);
}

// Each key's inputs per batch, with the rows' token indices (routed experts see a subset).
class Recorder : public LinearInputObserver {
 public:
  explicit Recorder(int group) : group_(group) {}
  void observe_routing(const DecoderLayerLayout&, const MoeRouting& r) override { routing_ = r; }
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    if (sequential_group(m) != group_ || !feeds_key(m)) return;
    at::Tensor tokens = m.expert < 0 ? at::arange(x.size(0), at::kLong)
                                     : routing_.experts.at(static_cast<size_t>(m.expert)).tokens;
    inputs[input_key(m)] = {x.clone(), tokens};
  }
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> inputs;

 private:
  int group_;
  MoeRouting routing_;
};

TEST(HoldoutSplit, FoldGramsSumExactlyTheirTokens) {
  for (bool moe : {false, true}) {
    test::TempDir dir;
    write_random_model(test::one_layer_config(moe), dir.path() / "m", 8);
    const ModelWeights weights = ModelWeights::open(dir.path() / "m");
    const DecoderLayer layer = DecoderLayer::load(weights, 0, {});
    const RotaryTables rope = make_rotary_tables(weights.config(), 8, c10::kCPU, at::kFloat);
    at::manual_seed(4);
    HiddenBatches stream;
    stream.seqlen = 8;
    stream.batches = {at::randn({1, 8, 32}), at::randn({1, 8, 32})};  // windows 1 and 2 of 3
    const HoldoutSplit split(3, 8, 3);  // 2 pieces of 4 tokens per window
    ASSERT_EQ(split.piece_length(), 4);
    CaptureSettings settings;
    settings.split = &split;
    settings.first_window = 1;
    for (int group = 0; group < kSequentialGroups; ++group) {
      // Each LayerStages advances its stream in place: two copies.
      HiddenBatches a = stream, b = stream;
      for (auto* s : {&a, &b})
        for (auto& t : s->batches) t = t.clone();
      LayerStages stages(layer, a, rope, c10::kCPU, true), again(layer, b, rope, c10::kCPU, true);
      const GroupStatistics stats =
          capture_group_statistics(group, stages, nullptr, nullptr, settings, c10::kCPU);
      // Expected: per fold, Σ over the batches of x_fᵀ x_f in fp64 from the fold's rows.
      std::map<std::string, std::array<at::Tensor, 2>> expected;
      std::map<std::string, std::array<int64_t, 2>> tokens;
      int64_t window = 1;
      for (size_t b = 0; b < stream.batches.size(); ++b) {
        Recorder rec(group);
        again.observe(group, b, rec);
        const int64_t sequences = stream.batches[b].size(0);
        const at::Tensor folds = split.row_folds(window, sequences, c10::kCPU);
        window += sequences;
        for (const auto& [key, input] : rec.inputs) {
          const at::Tensor fold_of_row = folds.index_select(0, input.second);
          for (int f = 0; f < 2; ++f) {
            const at::Tensor x =
                input.first.index_select(0, (fold_of_row == (f == 1)).nonzero().reshape({-1}));
            at::Tensor term = at::matmul(x.t(), x).to(at::kDouble);
            auto& slot = expected[key][static_cast<size_t>(f)];
            slot = slot.defined() ? slot + term : term;
            tokens[key][static_cast<size_t>(f)] += x.size(0);
          }
        }
      }
      ASSERT_FALSE(expected.empty());
      for (const auto& [key, sums] : expected)
        for (int f = 0; f < 2; ++f) {
          const GramAccumulator* g = stats.find(GroupStatistics::fold_key(key, f));
          ASSERT_NE(g, nullptr) << "moe " << moe << " group " << group << " " << key << " fold "
                                << f;
          EXPECT_EQ(g->tokens(), tokens[key][static_cast<size_t>(f)]) << key;
          EXPECT_EQ(g->sequences(), split.pieces(1, 2)[static_cast<size_t>(f)]) << key;
          // The same fp32 GEMMs; their fp64 sum of two terms against the exact sum.
          EXPECT_TRUE(
              at::allclose(g->sum_of_outer_products(), sums[static_cast<size_t>(f)], 1e-12, 1e-9))
              << "moe " << moe << " group " << group << " " << key << " fold " << f;
        }
    }
  }
}

}  // namespace
}  // namespace sarqc

// LayerStages against re-running the layer: every group's inputs and the layer's output are
// bit-identical to what forward() gives with the weights each group sees, for dense and MoE
// layers, with and without the cached MLP activations.
#include <map>
#include <optional>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

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

// The input each module's key received, per group (the first module of a key that feeds it).
class Recorder : public LinearInputObserver {
 public:
  explicit Recorder(int group) : group_(group) {}
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    if (sequential_group(m) == group_ && feeds_key(m)) inputs[m.local_name] = x.clone();
  }
  std::map<std::string, at::Tensor> inputs;

 private:
  int group_;
};

// Perturbs the group's weights as quantization would (the later groups must see them).
void perturb_group(DecoderLayer& layer, int group) {
  for (const auto& m : layer.layout().linears)
    if (sequential_group(m) == group)
      layer.set_weight(m.local_name, (layer.weight(m.local_name) * 8).round() / 8);
}

void expect_equal_inputs(const Recorder& a, const Recorder& b, int group) {
  ASSERT_EQ(a.inputs.size(), b.inputs.size()) << "group " << group;
  ASSERT_FALSE(a.inputs.empty()) << "group " << group;
  for (const auto& [name, x] : a.inputs)
    EXPECT_TRUE(at::equal(x, b.inputs.at(name))) << "group " << group << " " << name;
}

TEST(LayerStages, GroupInputsAndOutputEqualForwardWithTheWeightsOfTheTime) {
  for (bool moe : {false, true})
    for (bool cache : {false, true}) {
      test::TempDir dir;
      write_random_model(test::one_layer_config(moe), dir.path() / "m", 5);
      const ModelWeights weights = ModelWeights::open(dir.path() / "m");
      const ComputeOptions compute;
      DecoderLayer staged = DecoderLayer::load(weights, 0, compute);
      DecoderLayer rerun = DecoderLayer::load(weights, 0, compute);
      const RotaryTables rope =
          make_rotary_tables(weights.config(), 8, compute.device, compute.dtype);
      at::manual_seed(3);
      HiddenBatches stream;
      stream.seqlen = 8;
      stream.batches = {at::randn({2, 8, 32}), at::randn({3, 8, 32})};
      const std::vector<at::Tensor> inputs = {stream.batches[0].clone(),
                                              stream.batches[1].clone()};
      LayerStages stages(staged, stream, rope, compute.device, cache);
      for (int group = 0; group < kSequentialGroups; ++group) {
        for (size_t b = 0; b < inputs.size(); ++b) {
          Recorder got(group), expected(group);
          stages.observe(group, b, got);
          rerun.forward(inputs[b], rope, &expected);  // the prefix re-run, as before
          expect_equal_inputs(got, expected, group);
        }
        perturb_group(staged, group);
        perturb_group(rerun, group);
      }
      stages.finish();
      for (size_t b = 0; b < inputs.size(); ++b)
        EXPECT_TRUE(at::equal(stream.batches[b], rerun.forward(inputs[b], rope)))
            << "moe " << moe << " cache " << cache << " batch " << b;
    }
}

TEST(LayerStages, AGroupCannotBeObservedAfterALaterOne) {
  test::TempDir dir;
  write_random_model(test::one_layer_config(false), dir.path() / "m", 6);
  const ModelWeights weights = ModelWeights::open(dir.path() / "m");
  const DecoderLayer layer = DecoderLayer::load(weights, 0, {});
  const RotaryTables rope = make_rotary_tables(weights.config(), 4, c10::kCPU, at::kFloat);
  HiddenBatches stream;
  stream.seqlen = 4;
  stream.batches = {at::randn({1, 4, 32})};
  LayerStages stages(layer, stream, rope, c10::kCPU, true);
  Recorder r2(2), r1(1);
  stages.observe(2, 0, r2);
  EXPECT_THROW(stages.observe(1, 0, r1), c10::Error);
}

}  // namespace
}  // namespace sarqc

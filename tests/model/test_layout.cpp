#include <gtest/gtest.h>

#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/checkpoint.h"
#include "sarqc/io/safetensors_writer.h"
#include "sarqc/model/layout.h"
#include "test_support.h"

namespace sarqc {
namespace {

using nlohmann::json;

ModelConfig qwen2_moe_config() {
  return parse_model_config({{"model_type", "qwen2_moe"},
                             {"hidden_size", 32},
                             {"intermediate_size", 64},
                             {"num_hidden_layers", 2},
                             {"num_attention_heads", 4},
                             {"num_key_value_heads", 2},
                             {"vocab_size", 50},
                             {"rms_norm_eps", 1e-6},
                             {"num_experts", 4},
                             {"num_experts_per_tok", 2},
                             {"moe_intermediate_size", 16},
                             {"shared_expert_intermediate_size", 48},
                             {"mlp_only_layers", {0}}},
                            "qwen2_moe test config");
}

// Writes a checkpoint with exactly the tensors of `tensors` (zeros), optionally edited.
void write_checkpoint(const std::filesystem::path& dir, std::vector<NamedShape> tensors) {
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& t : tensors) named.emplace_back(t.name, at::zeros(t.shape));
  save_safetensors(dir / "model.safetensors", named);
}

TEST(Layout, FixtureTensorsAreExactlyTheExpectedOnes) {
  SARQC_REQUIRE_FIXTURES();
  for (const char* model : {"stories260K", "babyllama-tok105"}) {
    SCOPED_TRACE(model);
    ModelLayout layout = build_layout(load_model_config(test::fixture_model(model)));
    const Checkpoint ckpt = Checkpoint::open(test::fixture_model(model));
    std::set<std::string> expected;
    for (const auto& t : expected_tensors(layout)) expected.insert(t.name);
    const auto names = ckpt.tensor_names();
    EXPECT_EQ(expected, std::set<std::string>(names.begin(), names.end()));
    const LayoutCheck check = check_checkpoint(layout, ckpt);
    EXPECT_TRUE(check.warnings.empty());
    EXPECT_TRUE(check.unused_tensors.empty());
    ASSERT_EQ(layout.layers.size(), 5u);
    EXPECT_EQ(layout.layers[0].linears.size(), 7u);
  }
}

TEST(Layout, QwenMoeModulesShapesAndQuantizability) {
  const ModelLayout layout = build_layout(qwen2_moe_config());
  ASSERT_EQ(layout.layers.size(), 2u);
  EXPECT_FALSE(layout.layers[0].moe);
  EXPECT_TRUE(layout.layers[1].moe);
  EXPECT_EQ(layout.layers[0].linears.size(), 7u);  // q k v o gate up down
  // attention 4 + router 1 + 4 experts x 3 + shared expert 3 + shared gate 1
  const auto& moe = layout.layers[1].linears;
  EXPECT_EQ(moe.size(), 4u + 1 + 12 + 3 + 1);
  int routers = 0;
  for (const auto& m : moe) {
    if (!m.quantizable) {
      ++routers;
      EXPECT_TRUE(m.role == LinearRole::Router || m.role == LinearRole::SharedExpertGate);
    }
    if (m.name == "model.layers.1.mlp.experts.3.down_proj") {
      EXPECT_EQ(m.in_features, 16);
      EXPECT_EQ(m.out_features, 32);
      EXPECT_EQ(m.expert, 3);
    }
    if (m.name == "model.layers.1.mlp.shared_expert_gate") EXPECT_EQ(m.out_features, 1);
    if (m.role == LinearRole::Q || m.role == LinearRole::K || m.role == LinearRole::V)
      EXPECT_TRUE(m.has_bias) << m.name;  // qwen2: q/k/v always biased
    if (m.role == LinearRole::O) EXPECT_FALSE(m.has_bias);
  }
  EXPECT_EQ(routers, 2);
  EXPECT_EQ(layout.globals.back().name, "lm_head.weight");  // untied by default
}

TEST(Layout, MixtralExpertNames) {
  const ModelConfig c = parse_model_config({{"model_type", "mixtral"},
                                            {"hidden_size", 32},
                                            {"intermediate_size", 64},
                                            {"num_hidden_layers", 1},
                                            {"num_attention_heads", 4},
                                            {"vocab_size", 50},
                                            {"rms_norm_eps", 1e-6},
                                            {"num_local_experts", 2}},
                                           "mixtral test config");
  std::set<std::string> names;
  for (const auto& t : expected_tensors(build_layout(c))) names.insert(t.name);
  for (const char* n : {"model.layers.0.block_sparse_moe.gate.weight",
                        "model.layers.0.block_sparse_moe.experts.1.w1.weight",
                        "model.layers.0.block_sparse_moe.experts.1.w2.weight",
                        "model.layers.0.block_sparse_moe.experts.1.w3.weight"})
    EXPECT_TRUE(names.count(n)) << n;
}

TEST(Layout, PackabilityFollowsGptqShapeRules) {
  LinearModule m;
  m.in_features = 64;
  m.out_features = 172;  // 172 % 8 != 0, 172 % 4 == 0, 172 % 32 != 0
  EXPECT_FALSE(m.packable(2));
  EXPECT_FALSE(m.packable(3));
  EXPECT_FALSE(m.packable(4));
  EXPECT_TRUE(m.packable(8));
  m.out_features = 352;  // multiple of 32
  EXPECT_TRUE(m.packable(3) && m.packable(2) && m.packable(4));
  m.quantizable = false;
  EXPECT_FALSE(m.packable(8));
}

class LayoutCheckErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = qwen2_moe_config();
    tensors_ = expected_tensors(build_layout(config_));
  }
  void expect_check_error(const std::string& needle) {
    write_checkpoint(dir_.path(), tensors_);
    ModelLayout layout = build_layout(config_);
    test::expect_bad_input([&] { check_checkpoint(layout, Checkpoint::open(dir_.path())); },
                           needle);
  }
  ModelConfig config_;
  std::vector<NamedShape> tensors_;
  test::TempDir dir_;
};

TEST_F(LayoutCheckErrors, CompleteCheckpointPasses) {
  write_checkpoint(dir_.path(), tensors_);
  ModelLayout layout = build_layout(config_);
  EXPECT_TRUE(check_checkpoint(layout, Checkpoint::open(dir_.path())).warnings.empty());
}

TEST_F(LayoutCheckErrors, MissingExpertTensor) {
  tensors_.erase(std::find_if(tensors_.begin(), tensors_.end(), [](const NamedShape& t) {
    return t.name == "model.layers.1.mlp.experts.2.up_proj.weight";
  }));
  expect_check_error("tensor 'model.layers.1.mlp.experts.2.up_proj.weight' [16, 32] is missing");
}

TEST_F(LayoutCheckErrors, WrongShape) {
  for (auto& t : tensors_)
    if (t.name == "model.layers.0.mlp.down_proj.weight") t.shape = {32, 65};
  expect_check_error("'model.layers.0.mlp.down_proj.weight' has shape [32, 65], config.json "
                     "implies [32, 64]");
}

TEST_F(LayoutCheckErrors, UnannouncedBias) {
  tensors_.push_back({"model.layers.0.self_attn.o_proj.bias", {32}});
  expect_check_error("'model.layers.0.self_attn.o_proj.bias' exists but config.json implies no "
                     "bias");
}

std::vector<NamedShape> fuse_experts(const std::vector<NamedShape>& tensors, int64_t gate_up_rows) {
  std::vector<NamedShape> fused;
  for (const auto& t : tensors)
    if (t.name.find("mlp.experts.") == std::string::npos) fused.push_back(t);
  fused.push_back({"model.layers.1.mlp.experts.gate_up_proj", {4, gate_up_rows, 32}});
  fused.push_back({"model.layers.1.mlp.experts.down_proj", {4, 32, 16}});
  return fused;
}

TEST_F(LayoutCheckErrors, FusedExpertsAreAcceptedAndMarked) {
  write_checkpoint(dir_.path(), fuse_experts(tensors_, 32));
  ModelLayout layout = build_layout(config_);
  const LayoutCheck check = check_checkpoint(layout, Checkpoint::open(dir_.path()));
  EXPECT_TRUE(check.unused_tensors.empty());
  EXPECT_FALSE(layout.layers[0].fused_experts);
  ASSERT_TRUE(layout.layers[1].fused_experts);
  const auto& layer = layout.layers[1];
  for (const auto& m : layer.linears) {
    if (m.expert < 0) {
      EXPECT_EQ(layer.weight_source(m), m.weight_name());
    } else {
      EXPECT_EQ(layer.weight_source(m), m.role == LinearRole::Down ? layer.fused_down_name()
                                                                   : layer.fused_gate_up_name());
    }
  }
}

TEST_F(LayoutCheckErrors, FusedExpertsWithWrongShape) {
  tensors_ = fuse_experts(tensors_, 30);
  expect_check_error("'model.layers.1.mlp.experts.gate_up_proj' has shape [4, 30, 32], config.json "
                     "implies [4, 32, 32]");
}

TEST_F(LayoutCheckErrors, MissingLmHeadFallsBackToTiedWithWarning) {
  tensors_.erase(std::find_if(tensors_.begin(), tensors_.end(),
                              [](const NamedShape& t) { return t.name == "lm_head.weight"; }));
  tensors_.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {4}});
  write_checkpoint(dir_.path(), tensors_);
  ModelLayout layout = build_layout(config_);
  const LayoutCheck check = check_checkpoint(layout, Checkpoint::open(dir_.path()));
  EXPECT_TRUE(layout.tied_embeddings);
  ASSERT_EQ(check.warnings.size(), 2u);
  EXPECT_NE(check.warnings[0].find("no lm_head.weight"), std::string::npos);
  EXPECT_EQ(check.unused_tensors,
            std::vector<std::string>{"model.layers.0.self_attn.rotary_emb.inv_freq"});
}

}  // namespace
}  // namespace sarqc

// Reading the trained fixture checkpoints. Expected checksums and values were computed with a
// stand-alone reader written from the safetensors spec (Python struct + json), not with sarqc.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "sarqc/io/checkpoint.h"
#include "sarqc/util/sha256.h"
#include "test_support.h"

namespace sarqc {
namespace {

struct TensorFact {
  const char* name;
  std::vector<int64_t> shape;
  const char* sha256;  // of the tensor's raw little-endian bytes
  float first[3];
  double sum;
};

struct FixtureFacts {
  const char* model;
  size_t tensors;
  int64_t parameters;  // from the fixtures README
  std::vector<TensorFact> facts;
};

std::vector<FixtureFacts> fixture_facts() {
  return {
      {"stories260K", 47, 260032,
       {{"model.embed_tokens.weight", {512, 64},
         "452158377d2f8703b5b38935f894b628d3c7e2ac26bc167bfbfc68655dfe2c8a",
         {-0.29474878311157227f, 0.5618956089019775f, 0.1754225343465805f}, -752.3677446640068},
        {"model.layers.0.self_attn.q_proj.weight", {64, 64},
         "ff1c6cf9be1df9fe87c52d1981efe447295cdfa58fc61ad2780c86c2bd5e9d14",
         {0.04439278692007065f, 0.07974770665168762f, -0.008925346657633781f},
         -23.827822908671806},
        {"model.layers.4.mlp.down_proj.weight", {64, 172},
         "414592b302b72ae5a85da2bfde57c127f23ee6d306b2abeb3be9c9888fb4901e",
         {-0.04791264981031418f, -0.02296368032693863f, -0.018824636936187744f},
         19.543787761240765},
        {"model.norm.weight", {64},
         "0e94e5b6ed76295de67218f03110c2ffaba21db46cc8a5ccd716bd8ebaf024f7",
         {2.4583089351654053f, 1.3673226833343506f, 1.7504382133483887f}, 115.95276230573654}}},
      {"babyllama-tok105", 47, 936448,
       {{"model.embed_tokens.weight", {105, 128},
         "cb507290fc99c27e0ea75cc419a990866772278c893241275262686802372917",
         {0.04358575865626335f, -0.01637784205377102f, -0.03616722673177719f}, 8.452852515766608},
        {"model.layers.0.self_attn.q_proj.weight", {128, 128},
         "4508e4a5cf6bc877d7267ca2ac2152e64d30d9eb8b5b47f033a6f33d08cbe9a7",
         {0.009733373299241066f, -0.030169714242219925f, -0.033947546035051346f},
         0.473033370548535},
        {"model.layers.4.mlp.down_proj.weight", {128, 352},
         "db33c939bffefdeb7e1f0181f39f093691989a8852c8735b7477dddb193a64f5",
         {-0.008207496255636215f, -0.018139323219656944f, -0.020601650699973106f},
         4.073349227830704},
        {"model.norm.weight", {128},
         "aa8dfe4188912b8d62888f819b4043d4c9f8a8392d1622914159cc0600955c35",
         {1.4417486190795898f, 1.4668093919754028f, 1.4185290336608887f}, 187.0669058561325}}},
  };
}

class FixtureCheckpoint : public ::testing::TestWithParam<size_t> {};

TEST_P(FixtureCheckpoint, NamesShapesDtypesAndChecksums) {
  SARQC_REQUIRE_FIXTURES();
  const FixtureFacts f = fixture_facts()[GetParam()];
  const Checkpoint ckpt = Checkpoint::open(test::fixture_model(f.model));
  EXPECT_FALSE(ckpt.sharded());
  EXPECT_EQ(ckpt.tensor_count(), f.tensors);
  EXPECT_EQ(ckpt.total_numel(), f.parameters);
  EXPECT_EQ(ckpt.files().at(0).metadata().at("format"), "pt");
  for (const auto& name : ckpt.tensor_names()) EXPECT_EQ(ckpt.info(name).dtype, Dtype::F32);
  for (const auto& fact : f.facts) {
    SCOPED_TRACE(fact.name);
    EXPECT_EQ(ckpt.info(fact.name).shape, fact.shape);
    const at::Tensor t = ckpt.load(fact.name);
    EXPECT_EQ(t.scalar_type(), at::kFloat);
    EXPECT_EQ(t.sizes().vec(), fact.shape);
    EXPECT_EQ(sha256_hex(t.data_ptr(), t.nbytes()), fact.sha256);
    const at::Tensor flat = t.flatten();
    for (int i = 0; i < 3; ++i) EXPECT_EQ(flat[i].item<float>(), fact.first[i]);
    EXPECT_NEAR(t.to(at::kDouble).sum().item<double>(), fact.sum, 1e-9 * (1 + std::abs(fact.sum)));
  }
}

INSTANTIATE_TEST_SUITE_P(BothModels, FixtureCheckpoint, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return info.param == 0 ? std::string("stories260K")
                                                  : std::string("babyllama");
                         });

}  // namespace
}  // namespace sarqc

// Routing against a per-token reference, and MoE checkpoints derived from a dense fixture model.
#include <algorithm>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/moe.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/json_file.h"
#include "test_support.h"

namespace sarqc {
namespace {

TEST(MoeRouting, MatchesPerTokenTopKAndListsEveryRoutedToken) {
  at::manual_seed(5);
  const int64_t N = 40, E = 6, k = 2;
  const at::Tensor logits = at::randn({N, E}) * 3;
  for (bool renormalize : {false, true}) {
    const MoeRouting r = route_tokens(logits, k, renormalize, at::kFloat);
    ASSERT_EQ(r.experts.size(), size_t(E));
    std::vector<std::vector<std::pair<int64_t, float>>> expected(E);  // expert -> (token, weight)
    for (int64_t t = 0; t < N; ++t) {
      std::vector<double> p(E);
      double z = 0;
      for (int64_t e = 0; e < E; ++e) z += p[e] = std::exp(logits[t][e].item<double>());
      std::vector<int64_t> order(E);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
      const double kept = p[order[0]] + p[order[1]];
      for (int64_t n = 0; n < k; ++n) {
        const int64_t e = order[n];
        const double w = renormalize ? p[e] / kept : p[e] / z;
        EXPECT_EQ(r.top_experts[t][n].item<int64_t>(), e);
        EXPECT_NEAR(r.top_weights[t][n].item<float>(), w, 1e-6);
        expected[e].emplace_back(t, static_cast<float>(w));
      }
    }
    for (int64_t e = 0; e < E; ++e) {
      const auto& ex = r.experts[e];
      ASSERT_EQ(ex.tokens.numel(), int64_t(expected[e].size())) << "expert " << e;
      for (size_t i = 0; i < expected[e].size(); ++i) {
        EXPECT_EQ(ex.tokens[i].item<int64_t>(), expected[e][i].first);
        EXPECT_NEAR(ex.weight[i].item<float>(), expected[e][i].second, 1e-6);
      }
    }
  }
}

TEST(MoeRouting, StarvedExpertsGetEmptyTokenLists) {
  at::Tensor logits = at::zeros({5, 4});
  logits.select(1, 0).fill_(5);
  logits.select(1, 1).fill_(4);
  const MoeRouting r = route_tokens(logits, 2, true, at::kFloat);
  EXPECT_EQ(r.experts[0].tokens.numel(), 5);
  EXPECT_EQ(r.experts[1].tokens.numel(), 5);
  EXPECT_EQ(r.experts[2].tokens.numel(), 0);
  EXPECT_EQ(r.experts[3].tokens.numel(), 0);
  EXPECT_THROW(route_tokens(logits, 5, true, at::kFloat), c10::Error);
}

class MoeFromDense : public ::testing::Test {
 protected:
  void SetUp() override {
    SARQC_REQUIRE_FIXTURES();
    dense_ = test::fixture_model("stories260K");
    at::manual_seed(9);
    ids_ = at::randint(3, 512, {2, 48}, at::kLong);
  }
  at::Tensor logits(const std::filesystem::path& dir) {
    const ModelWeights w = ModelWeights::open(dir);
    return StreamingModel(w, {}).forward(ids_);
  }
  std::filesystem::path dense_;
  at::Tensor ids_;
  test::TempDir dir_;
};

TEST_F(MoeFromDense, MixtralOfExactCopiesComputesTheDenseModel) {
  // Renormalised routing weights sum to one, so identical experts reproduce the dense MLP.
  MoeFromDenseOptions o;
  o.noise = 0;
  moe_from_dense(dense_, dir_ / "moe", o);
  EXPECT_TRUE(at::allclose(logits(dir_ / "moe"), logits(dense_), 1e-4, 1e-4));
}

TEST_F(MoeFromDense, FusedStorageComputesTheSameModelAsPerExpertStorage) {
  for (const char* type : {"mixtral", "qwen3_moe"}) {
    MoeFromDenseOptions o;
    o.model_type = type;
    o.seed = 3;
    moe_from_dense(dense_, dir_ / (std::string(type) + "-split"), o);
    o.fused = true;
    moe_from_dense(dense_, dir_ / (std::string(type) + "-fused"), o);
    const ModelWeights fused = ModelWeights::open(dir_ / (std::string(type) + "-fused"));
    EXPECT_TRUE(fused.layout().layers[0].fused_experts);
    EXPECT_TRUE(fused.checkpoint().contains("model.layers.0.mlp.experts.gate_up_proj"));
    EXPECT_TRUE(at::equal(logits(dir_ / (std::string(type) + "-split")),
                          logits(dir_ / (std::string(type) + "-fused"))))
        << type;
  }
}

TEST_F(MoeFromDense, NoiseMakesExpertsDifferAndConfigsDescribeTheLayout) {
  MoeFromDenseOptions o;
  o.model_type = "qwen2_moe";
  o.experts = 3;
  o.top_k = 2;
  o.noise = 0.1;
  moe_from_dense(dense_, dir_ / "q2", o);
  const ModelWeights w = ModelWeights::open(dir_ / "q2");
  EXPECT_EQ(w.config().num_experts, 3);
  EXPECT_EQ(w.config().shared_expert_intermediate_size, 172);
  EXPECT_TRUE(w.config().qkv_bias);
  const auto& layer = w.layout().layers[0];
  const at::Tensor e0 = w.tensor("model.layers.0.mlp.experts.0.up_proj.weight", c10::kCPU, at::kFloat);
  const at::Tensor e1 = w.tensor("model.layers.0.mlp.experts.1.up_proj.weight", c10::kCPU, at::kFloat);
  const at::Tensor dense_up = ModelWeights::open(dense_).tensor("model.layers.0.mlp.up_proj.weight",
                                                                c10::kCPU, at::kFloat);
  EXPECT_FALSE(at::equal(e0, e1));
  const double rel = ((e0 - dense_up).norm() / dense_up.norm()).item<double>();
  EXPECT_GT(rel, 0.05);
  EXPECT_LT(rel, 0.15);
  EXPECT_TRUE(layer.moe);
  // The shared expert is the dense MLP unperturbed, behind a zero gate (sigmoid(0) = 1/2).
  for (const char* proj : {"up_proj", "gate_proj", "down_proj"})
    EXPECT_TRUE(at::equal(
        w.tensor(std::string("model.layers.0.mlp.shared_expert.") + proj + ".weight", c10::kCPU,
                 at::kFloat),
        ModelWeights::open(dense_).tensor(std::string("model.layers.0.mlp.") + proj + ".weight",
                                          c10::kCPU, at::kFloat)))
        << proj;
  EXPECT_TRUE(at::equal(
      w.tensor("model.layers.0.mlp.shared_expert_gate.weight", c10::kCPU, at::kFloat),
      at::zeros({1, w.config().hidden_size})));
  EXPECT_TRUE(at::isfinite(logits(dir_ / "q2")).all().item<bool>());
  test::expect_error([&] { moe_from_dense(dense_, dir_ / "q2", o); }, ErrorKind::Usage,
                     "exists and is not empty");
  test::expect_bad_input([&] { moe_from_dense(dir_ / "q2", dir_ / "again", o); },
                         "needs a dense llama-style model");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "again"));
}

}  // namespace
}  // namespace sarqc

// The streamed forward (one layer resident, sequences in batches) against the all-at-once one,
// and reduced-precision activations against fp32.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/streaming_model.h"
#include "sarqc/model/rms_norm.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/device.h"
#include "test_support.h"

namespace sarqc {
namespace {

class StreamingModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SARQC_REQUIRE_FIXTURES();
    at::manual_seed(2);
    ids_ = at::randint(3, 512, {5, 64}, at::kLong);
    ids_.select(1, 0).fill_(1);  // BOS
  }
  at::Tensor streamed_logits(const StreamingModel& model, int64_t batch_tokens) {
    HiddenBatches hidden = model.embed(ids_, batch_tokens);
    int64_t layers_done = 0;
    model.run_layers(hidden, [&](int64_t l) { EXPECT_EQ(l, layers_done++); });
    EXPECT_EQ(layers_done, model.weights().config().num_hidden_layers);
    std::vector<at::Tensor> out;
    for (const auto& b : hidden.batches) out.push_back(model.logits(b));
    return at::cat(out);
  }
  at::Tensor ids_;
};

TEST_F(StreamingModelTest, StreamedBatchesEqualAllAtOnce) {
  const ModelWeights w = ModelWeights::open(test::fixture_model("stories260K"));
  StreamingModel model(w, {});
  const at::Tensor all_at_once = model.forward(ids_);
  ASSERT_EQ(all_at_once.sizes(), (std::vector<int64_t>{5, 64, 512}));
  // One sequence per batch, then two per batch (the last batch holds one).
  // Different batch shapes change fp32 summation order in the matmuls: logits of magnitude ~20
  // agree to ~2e-5.
  EXPECT_TRUE(at::allclose(streamed_logits(model, 64), all_at_once, 1e-5, 1e-4));
  const at::Tensor two = streamed_logits(model, 128);
  EXPECT_TRUE(at::allclose(two, all_at_once, 1e-5, 1e-4));
  // Each sequence on its own gives the same logits: nothing leaks across the batch.
  for (int64_t s = 0; s < 5; ++s)
    EXPECT_TRUE(at::allclose(model.forward(ids_.narrow(0, s, 1))[0], all_at_once[s], 1e-5, 1e-4));
  // Resident layers run the very same computation as layers loaded one at a time.
  model.keep_layers_resident();
  EXPECT_TRUE(at::equal(model.forward(ids_), all_at_once));
}

TEST_F(StreamingModelTest, IncrementalDecodingWithKvCacheEqualsTheFullForward) {
  for (const char* name : {"stories260K", "babyllama-tok105"}) {
    const ModelWeights w = ModelWeights::open(test::fixture_model(name));
    StreamingModel model(w, {});
    model.keep_layers_resident();
    const at::Tensor ids = ids_.narrow(0, 0, 3).clamp_max(w.config().vocab_size - 1);
    const at::Tensor full = model.forward(ids);
    std::vector<KvCache> caches;
    std::vector<at::Tensor> parts;
    int64_t t = 0;
    for (int64_t step : {5, 1, 1, 20, 37}) {  // a prompt, single tokens, then chunks
      parts.push_back(model.forward_cached(ids.narrow(1, t, step), caches));
      t += step;
    }
    ASSERT_EQ(t, 64);
    EXPECT_EQ(caches[0].length(), 64);
    EXPECT_TRUE(at::allclose(at::cat(parts, 1), full, 1e-5, 1e-4)) << name;
  }
}

TEST_F(StreamingModelTest, CausalityPrefixLogitsDoNotDependOnLaterTokens) {
  const ModelWeights w = ModelWeights::open(test::fixture_model("babyllama-tok105"));
  StreamingModel model(w, {});
  at::Tensor ids = at::randint(3, 105, {1, 40}, at::kLong);
  const at::Tensor full = model.forward(ids);
  const at::Tensor prefix = model.forward(ids.narrow(1, 0, 25));
  EXPECT_TRUE(at::allclose(full.narrow(1, 0, 25), prefix, 1e-5, 1e-5));
}

TEST_F(StreamingModelTest, HalfPrecisionActivationsStayCloseToFp32) {
  const ModelWeights w = ModelWeights::open(test::fixture_model("stories260K"));
  const at::Tensor ref = at::log_softmax(StreamingModel(w, {}).forward(ids_), -1);
  for (c10::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    ComputeOptions o;
    o.dtype = dtype;
    if (!dtype_supported(o.device, dtype)) {  // fp16 matmul on CPU needs PyTorch >= 2
      test::expect_error([&] { check_dtype_supported(o.device, dtype); }, ErrorKind::Usage,
                         "--dtype fp16 is not supported on cpu");
      continue;
    }
    const at::Tensor got = at::log_softmax(StreamingModel(w, o).forward(ids_), -1);
    ASSERT_EQ(got.scalar_type(), at::kFloat);
    const double kl = (ref.exp() * (ref - got)).sum(-1).mean().item<double>();
    const double agree = (ref.argmax(-1) == got.argmax(-1)).to(at::kDouble).mean().item<double>();
    // bf16 keeps 8 bits of mantissa: small but clearly nonzero divergence.
    EXPECT_LT(kl, dtype == at::kHalf ? 1e-3 : 1e-2) << c10::toString(dtype);
    EXPECT_GT(kl, 0.0) << c10::toString(dtype);
    EXPECT_GT(agree, 0.9) << c10::toString(dtype);
  }
}

TEST_F(StreamingModelTest, RejectsTokenIdsOutsideTheVocabulary) {
  const ModelWeights w = ModelWeights::open(test::fixture_model("babyllama-tok105"));
  StreamingModel model(w, {});
  EXPECT_THROW(model.embed(at::full({1, 4}, 105, at::kLong)), c10::Error);
  EXPECT_THROW(model.embed(at::zeros({4}, at::kLong)), c10::Error);
}

TEST(StreamingModel, UntiedHeadUsesLmHeadAfterTheFinalNorm) {
  const nlohmann::json cfg = {
      {"model_type", "llama"}, {"hidden_size", 16}, {"intermediate_size", 24},
      {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"vocab_size", 30},
      {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", false}};
  test::TempDir dir;
  write_random_model(cfg, dir / "m", 4);
  const ModelWeights w = ModelWeights::open(dir / "m");
  ASSERT_FALSE(w.layout().tied_embeddings);
  const at::Tensor ids = at::randint(0, 30, {2, 7}, at::kLong);
  // Composed by hand from the parts: embedding rows, each layer, final norm, lm_head.
  at::Tensor h = w.embed_tokens(c10::kCPU, at::kFloat).index_select(0, ids.reshape(-1)).view({2, 7, 16});
  const RotaryTables rope = make_rotary_tables(w.config(), 7, c10::kCPU, at::kFloat);
  for (int64_t l = 0; l < 2; ++l) h = DecoderLayer::load(w, l, {}).forward(h, rope);
  const at::Tensor expected =
      at::matmul(rms_norm(h, w.final_norm(c10::kCPU, at::kFloat), 1e-6),
                 w.tensor("lm_head.weight", c10::kCPU, at::kFloat).t());
  EXPECT_TRUE(at::allclose(StreamingModel(w, {}).forward(ids), expected, 1e-5, 1e-5));
  EXPECT_FALSE(at::equal(w.tensor("lm_head.weight", c10::kCPU, at::kFloat),
                         w.embed_tokens(c10::kCPU, at::kFloat)));
}

TEST_F(StreamingModelTest, CudaForwardMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device in this build/machine";
  const ModelWeights w = ModelWeights::open(test::fixture_model("stories260K"));
  const at::Tensor cpu = StreamingModel(w, {}).forward(ids_);
  ComputeOptions o;
  o.device = c10::Device(c10::kCUDA, 0);
  const StreamingModel gpu_model(w, o);
  const at::Tensor gpu = gpu_model.forward(ids_);
  EXPECT_TRUE(gpu.is_cuda());
  EXPECT_TRUE(at::allclose(gpu.cpu(), cpu, 1e-4, 1e-3));
  // Streamed with activations forced to host memory between layers.
  o.device_activation_budget = 0;
  const StreamingModel host_model(w, o);
  EXPECT_TRUE(at::allclose(streamed_logits(host_model, 128).cpu(), cpu, 1e-4, 1e-3));
  o.dtype = at::kHalf;
  const at::Tensor half = StreamingModel(w, o).forward(ids_).cpu();
  EXPECT_GT((at::log_softmax(half, -1).argmax(-1) == cpu.argmax(-1)).to(at::kFloat).mean().item<float>(), 0.9);
}

}  // namespace
}  // namespace sarqc

// AWQ-style scale search (docs/methods.md §6.3, §9 item 12): folding is function-preserving, and
// the search never picks a scale worse than none.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "sarqc/rounding/rtn.h"
#include "sarqc/rounding/scale_search.h"
#include "sarqc/util/device.h"
#include "test_support.h"

namespace sarqc {
namespace {

nlohmann::json llama(int64_t kv_heads) {
  return {{"model_type", "llama"},  {"hidden_size", 32},        {"intermediate_size", 48},
          {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"num_key_value_heads", kv_heads},
          {"vocab_size", 40},       {"rms_norm_eps", 1e-6},     {"attention_bias", true},
          {"mlp_bias", true}};
}

// A random model of `config` in a temporary folder, with rotary tables for 9 positions.
struct RandomModel {
  RandomModel(const nlohmann::json& config, uint64_t seed)
      : weights(write(config, seed)),
        rope(make_rotary_tables(weights.config(), 9, c10::kCPU, at::kFloat)) {}
  ModelWeights write(const nlohmann::json& config, uint64_t seed) {
    write_random_model(config, dir / "m", seed);
    return ModelWeights::open(dir / "m");
  }
  test::TempDir dir;  // declared first: outlives the weights read from it
  ModelWeights weights;
  RotaryTables rope;
};

// The plain q/k/v grid loss of a layer as the search left it (scales folded, no clipping):
// RTN its q/k/v, run the attention on x, compare with the unmodified layer's output.
double qkv_loss_of(DecoderLayer searched, const DecoderLayer& original, const RotaryTables& rope,
                   const at::Tensor& x, const QuantGrid& grid) {
  const at::Tensor target = original.attention_block(x, rope) - x;
  for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
    searched.set_weight(m, RtnRounder().round(searched.weight(m), {}, grid, {}).dequantize());
  const at::Tensor y = searched.attention_block(x, rope) - x;
  return ((y - target).pow(2).mean() / target.pow(2).mean()).item<double>();
}

// Captures the input of one linear module.
struct InputOf : LinearInputObserver {
  explicit InputOf(std::string name) : name(std::move(name)) {}
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    if (m.local_name == name) input = x;
  }
  std::string name;
  at::Tensor input;
};

// Gemma 3's layer: (1 + w) norms, gate/up reading pre_feedforward_layernorm, a sliding window.
nlohmann::json gemma3(int64_t kv_heads) {
  return {{"model_type", "gemma3_text"},   {"hidden_size", 32},
          {"intermediate_size", 48},       {"num_hidden_layers", 1},
          {"num_attention_heads", 4},      {"num_key_value_heads", kv_heads},
          {"head_dim", 8},                 {"vocab_size", 40},
          {"rms_norm_eps", 1e-6},          {"sliding_window", 4},
          {"layer_types", {"sliding_attention"}}};
}

TEST(ScaleSearch, FoldingScalesLeavesTheLayerFunctionUnchanged) {
  for (const auto& [config, kv] :
       std::vector<std::pair<nlohmann::json, int64_t>>{
           {llama(4), 4}, {llama(2), 2}, {gemma3(4), 4}, {gemma3(2), 2}}) {
    SCOPED_TRACE(config.dump());
    const RandomModel model(config, 3);
    const ModelWeights& w = model.weights;
    const RotaryTables& rope = model.rope;
    DecoderLayer layer = DecoderLayer::load(w, 0, {});
    at::manual_seed(1);
    const at::Tensor x = at::randn({2, 9, 32});
    const at::Tensor before = layer.forward(x, rope);
    const at::Tensor q_before = layer.weight("self_attn.q_proj").clone();
    for (ScaleGroup g : {ScaleGroup::Qkv, ScaleGroup::O, ScaleGroup::GateUp, ScaleGroup::Down}) {
      const int64_t n = g == ScaleGroup::Down ? 48 : 32;
      const bool folded = apply_group_scales(layer, g, at::rand({n}) * 3 + 0.2);
      EXPECT_EQ(folded, g != ScaleGroup::O || kv == 4) << int(g);  // o needs v == o's input
    }
    EXPECT_FALSE(at::equal(layer.weight("self_attn.q_proj"), q_before));
    EXPECT_TRUE(at::allclose(layer.forward(x, rope), before, 1e-4, 1e-4)) << "kv " << kv;
  }
}

// Small MoE configurations: mixtral, and qwen2_moe with a shared expert behind a sigmoid gate.
std::vector<nlohmann::json> moe_configs() {
  nlohmann::json mixtral = llama(2);
  mixtral.update({{"model_type", "mixtral"},
                  {"num_local_experts", 4},
                  {"num_experts_per_tok", 2},
                  {"attention_bias", false},
                  {"mlp_bias", false}});
  nlohmann::json qwen = llama(2);
  qwen.update({{"model_type", "qwen2_moe"},
               {"num_experts", 4},
               {"num_experts_per_tok", 2},
               {"moe_intermediate_size", 24},
               {"shared_expert_intermediate_size", 40},
               {"norm_topk_prob", false},
               {"attention_bias", false},
               {"mlp_bias", false}});
  return {mixtral, qwen};
}

TEST(ScaleSearch, MoeFoldsIntoEveryReaderOfTheNormAndPerExpertDown) {
  // docs/methods.md §6.3/§8: gate/up scales reach every expert, the router and the shared-expert
  // gate; each expert's down scales fold into its own up_proj. The block computes the same.
  for (const auto& cfg : moe_configs()) {
    SCOPED_TRACE(cfg["model_type"].get<std::string>());
    const RandomModel model(cfg, 4);
    const ModelWeights& w = model.weights;
    const RotaryTables& rope = model.rope;
    DecoderLayer layer = DecoderLayer::load(w, 0, {});
    at::manual_seed(5);
    const at::Tensor x = at::randn({2, 9, 32});
    const at::Tensor before = layer.forward(x, rope);
    EXPECT_TRUE(apply_group_scales(layer, ScaleGroup::GateUp, at::rand({32}) * 3 + 0.2));
    for (const auto& m : layer.layout().linears)
      if (m.role == LinearRole::Down)
        EXPECT_TRUE(apply_group_scales(layer, ScaleGroup::Down, at::rand({m.in_features}) * 3 + 0.2,
                                       m.expert));
    EXPECT_TRUE(at::allclose(layer.forward(x, rope), before, 1e-4, 1e-4));

    // The search itself: one down unit per expert that saw tokens (and the shared expert), and
    // without clipping the layer still computes the same function.
    DecoderLayer searched = DecoderLayer::load(w, 0, {});
    ScaleSearchOptions o;
    o.clip = false;
    const auto records = search_scales(searched, {x}, rope, QuantGrid{2, -1, true, false}, o);
    int downs = 0, scaled = 0;
    for (const auto& r : records) {
      downs += r.which == ScaleGroup::Down;
      scaled += r.ratio > 0;
    }
    EXPECT_EQ(downs, cfg["model_type"] == "qwen2_moe" ? 5 : 4);
    EXPECT_GT(scaled, 0);
    // The reported q/k/v loss is that of the scales the layer now holds, recomputed by hand.
    const DecoderLayer original = DecoderLayer::load(w, 0, {});
    EXPECT_NEAR(records[0].loss, qkv_loss_of(searched, original, rope, x, {2, -1, true, false}),
                1e-5 * records[0].loss);
    EXPECT_TRUE(at::allclose(searched.forward(x, rope), before, 1e-4, 1e-4));
  }
}

TEST(ScaleSearch, ChosenScalesNeverLoseToNoScalingAndPreserveTheFunction) {
  SARQC_REQUIRE_FIXTURES();
  const ModelWeights w = ModelWeights::open(test::fixture_model("babyllama-tok105"));
  DecoderLayer layer = DecoderLayer::load(w, 0, {});
  const RotaryTables rope = make_rotary_tables(w.config(), 64, c10::kCPU, at::kFloat);
  at::manual_seed(2);
  const at::Tensor x = at::randn({4, 64, 128});
  const at::Tensor before = layer.forward(x, rope);
  ScaleSearchOptions o;
  o.clip = false;  // scaling alone is function-preserving
  const QuantGrid grid{3, -1, true, false};
  const auto records = search_scales(layer, {x}, rope, grid, o);
  ASSERT_EQ(records.size(), 4u);
  int scaled = 0;
  for (const auto& r : records) scaled += r.ratio > 0;
  EXPECT_GT(scaled, 0);
  // babyllama has grouped-query attention (fewer kv heads): o has nothing to fold into.
  ASSERT_LT(w.config().num_key_value_heads, w.config().num_attention_heads);
  EXPECT_TRUE(records[1].skipped);
  EXPECT_FALSE(records[1].scales.defined());
  EXPECT_TRUE(at::allclose(layer.forward(x, rope), before, 1e-3, 1e-3));
  // The reported losses are those of the layer before and after, recomputed by hand.
  const DecoderLayer original = DecoderLayer::load(w, 0, {});
  EXPECT_NEAR(records[0].loss_unscaled, qkv_loss_of(original, original, rope, x, grid),
              1e-5 * records[0].loss_unscaled);
  EXPECT_NEAR(records[0].loss, qkv_loss_of(layer, original, rope, x, grid), 1e-5 * records[0].loss);
  // Clipping then limits each row of down_proj (per-channel grid) to a0·(1 − i/20), i < 10, of
  // its own largest magnitude, and changes nothing else.
  DecoderLayer clipped = DecoderLayer::load(w, 0, {});
  o.clip = true;
  search_scales(clipped, {x}, rope, grid, o);
  const at::Tensor scaled_down = layer.weight("mlp.down_proj");  // same scales, unclipped
  const at::Tensor clipped_down = clipped.weight("mlp.down_proj");
  const at::Tensor a0 = std::get<0>(scaled_down.abs().max(1));
  const at::Tensor a = std::get<0>(clipped_down.abs().max(1));
  const at::Tensor steps = (1 - a / a0) * 20;  // i per row
  EXPECT_TRUE(at::allclose(steps, steps.round(), 0, 1e-3)) << steps;
  EXPECT_LE(steps.max().item<double>(), 9 + 1e-3);
  EXPECT_GT(steps.max().item<double>(), 0.5);  // some row is clipped
  EXPECT_TRUE(at::equal(clipped_down, at::minimum(at::maximum(scaled_down, -a.unsqueeze(1)),
                                                  a.unsqueeze(1))));
}

TEST(ScaleSearch, RunsOnCudaWithEveryDriftSaliency) {
  if (!cuda_available()) GTEST_SKIP() << "CUDA not available";
  // Every saliency's tensors must live on the layer's device (ones once was a host tensor).
  const RandomModel model(llama(4), 7);
  const c10::Device cuda(c10::kCUDA, 0);
  at::manual_seed(5);
  const at::Tensor x = at::randn({2, 9, 32});
  const RotaryTables rope = make_rotary_tables(model.weights.config(), 9, cuda, at::kFloat);
  for (const char* saliency : {"ones", "hdiag", "absmean", "absmean-pow", "elem"}) {
    DecoderLayer gpu = DecoderLayer::load(model.weights, 0, {cuda, at::kFloat});
    DecoderLayer cpu = DecoderLayer::load(model.weights, 0, {});
    ScaleSearchObjective drift;
    drift.lambda = 0.1;
    drift.saliency = saliency;
    const auto on_gpu = search_scales(gpu, {x.to(cuda)}, rope, QuantGrid{3, -1, true, false}, {},
                                      drift);
    const auto on_cpu = search_scales(cpu, {x}, model.rope, QuantGrid{3, -1, true, false}, {},
                                      drift);
    ASSERT_EQ(on_gpu.size(), on_cpu.size()) << saliency;
    for (size_t i = 0; i < on_gpu.size(); ++i)
      EXPECT_NEAR(on_gpu[i].loss_unscaled, on_cpu[i].loss_unscaled, 1e-3 * on_cpu[i].loss_unscaled)
          << saliency << " " << on_cpu[i].group;
  }
}

TEST(ScaleSearch, ClippingLeavesTheCheckpointAndOtherLoadsOfTheLayerUntouched) {
  // On the CPU in the stored dtype a loaded weight could be a view of the checkpoint mapping;
  // the FP reference layer of the interp objectives is a second load of the same tensors.
  const RandomModel model(llama(4), 6);
  const ModelWeights& w = model.weights;
  DecoderLayer fp = DecoderLayer::load(w, 0, {});
  DecoderLayer layer = DecoderLayer::load(w, 0, {});
  at::manual_seed(4);
  const at::Tensor x = at::randn({2, 9, 32});
  ScaleSearchOptions o;
  o.clip = true;
  search_scales(layer, {x}, model.rope, QuantGrid{2, -1, true, false}, o);
  const ModelWeights fresh = ModelWeights::open(w.dir());  // its own mapping of the file
  const auto& layout = w.layout().layers[0];
  bool changed = false;
  for (const auto& m : layout.linears) {
    const at::Tensor stored = fresh.linear_weight(layout, m, c10::kCPU, at::kFloat);
    EXPECT_TRUE(at::equal(fp.weight(m.local_name), stored)) << m.name;
    EXPECT_TRUE(at::equal(w.linear_weight(layout, m, c10::kCPU, at::kFloat), stored)) << m.name;
    changed |= !at::equal(layer.weight(m.local_name), stored);
  }
  EXPECT_TRUE(changed);  // the search did change the layer it was given
}

TEST(ScaleSearch, GroupSizesThatDoNotDivideAModuleFallBackToPerRow) {
  SARQC_REQUIRE_FIXTURES();
  // stories260K: down_proj has 172 inputs, not a multiple of 32.
  const ModelWeights w = ModelWeights::open(test::fixture_model("stories260K"));
  DecoderLayer layer = DecoderLayer::load(w, 0, {});
  const RotaryTables rope = make_rotary_tables(w.config(), 32, c10::kCPU, at::kFloat);
  const at::Tensor x = at::randn({2, 32, 64});
  ScaleSearchOptions o;
  o.clip = false;
  const auto records = search_scales(layer, {x}, rope, QuantGrid{4, 32, true, false}, o);
  ASSERT_EQ(records.size(), 4u);
  ASSERT_EQ(records[3].group, "down");
  // down's unscaled loss is that of RTN with one group per row (172 = 5·32 + 12).
  const DecoderLayer original = DecoderLayer::load(w, 0, {});
  InputOf down("mlp.down_proj");
  const at::Tensor h = original.attention_block(x, rope);
  original.mlp_block(h, &down);
  const at::Tensor W = original.weight("mlp.down_proj");
  const at::Tensor Q = RtnRounder().round(W, {}, QuantGrid{4, -1, true, false}, {}).dequantize();
  const at::Tensor y = at::linear(down.input, W), yq = at::linear(down.input, Q);
  const double expected = ((yq - y).pow(2).mean() / y.pow(2).mean()).item<double>();
  EXPECT_NEAR(records[3].loss_unscaled, expected, 1e-4 * expected);
}

// L(0) of the q/k/v group computed by hand: RTN q/k/v (u = 1 at r = 0), attention output on x
// against the target y_t = y(x) + α (y(x_fp) − y(x)) of the unmodified layer (α per sequence), plus
// λ times the relative drift of the three weights (saliency ones).
double qkv_loss_at_r0(const ModelWeights& w, const RotaryTables& rope, const at::Tensor& x,
                      const at::Tensor& x_fp, const at::Tensor& alpha, double lambda,
                      const QuantGrid& grid) {
  DecoderLayer layer = DecoderLayer::load(w, 0, {});
  auto attn = [&](const at::Tensor& in) { return layer.attention_block(in, rope) - in; };
  const at::Tensor target = attn(x) + alpha * (attn(x_fp) - attn(x));
  double drift = 0;
  for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
    const at::Tensor W = layer.weight(m);
    const at::Tensor Q = RtnRounder().round(W, {}, grid, {}).dequantize().to(W.scalar_type());
    drift += ((Q - W).pow(2).mean() / W.pow(2).mean()).item<double>();
    layer.set_weight(m, Q);
  }
  const double mse = ((attn(x) - target).pow(2).mean() / target.pow(2).mean()).item<double>();
  return mse + lambda * drift;
}

TEST(ScaleSearch, InterpolatedTargetAndDriftPenaltyEnterTheGridLoss) {
  const RandomModel model(llama(4), 5);
  const ModelWeights& w = model.weights;
  const RotaryTables& rope = model.rope;
  at::manual_seed(3);
  const at::Tensor x = at::randn({3, 9, 32});
  const at::Tensor x_fp = x + 0.3 * at::randn({3, 9, 32});
  const QuantGrid grid{3, -1, true, false};
  ScaleSearchOptions o;
  o.clip = false;
  auto search = [&](const ScaleSearchObjective& obj) {
    DecoderLayer layer = DecoderLayer::load(w, 0, {});
    // Two batches, so α per sequence is matched to the right sequences.
    return search_scales(layer, {x.narrow(0, 0, 2), x.narrow(0, 2, 1)}, rope, grid, o, obj);
  };
  const auto plain = search({});
  const at::Tensor none = at::zeros({3, 1, 1});
  EXPECT_NEAR(plain[0].loss_unscaled, qkv_loss_at_r0(w, rope, x, x, none, 0, grid), 1e-5);

  ScaleSearchObjective interp;
  interp.fp_inputs = {x_fp.narrow(0, 0, 2), x_fp.narrow(0, 2, 1)};
  interp.alpha = {0.0, 0.0, 0.0};  // α = 0 is the symmetric target: nothing changes
  const auto zero = search(interp);
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_EQ(zero[i].ratio, plain[i].ratio);
    EXPECT_NEAR(zero[i].loss, plain[i].loss, 1e-6 * plain[i].loss);
  }
  interp.alpha = {0.2, 0.9, 0.5};
  const at::Tensor alpha = at::tensor({0.2f, 0.9f, 0.5f}).view({3, 1, 1});
  EXPECT_NEAR(search(interp)[0].loss_unscaled, qkv_loss_at_r0(w, rope, x, x_fp, alpha, 0, grid),
              1e-5);

  ScaleSearchObjective drift;
  drift.lambda = 0.5;
  const auto penalized = search(drift);
  EXPECT_NEAR(penalized[0].loss_unscaled, qkv_loss_at_r0(w, rope, x, x, none, 0.5, grid), 1e-5);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_GT(penalized[i].drift, 0) << i;
}

}  // namespace
}  // namespace sarqc

// A whole decoder layer of every supported architecture against a per-token, per-head,
// per-expert reference written from docs/formats.md §9, on random synthetic checkpoints.
#include <cmath>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "test_support.h"

namespace sarqc {
namespace {

using nlohmann::json;
using at::Tensor;

json base_config(const std::string& type, const std::string& arch) {
  return {{"model_type", type},       {"architectures", {arch}},   {"hidden_size", 32},
          {"intermediate_size", 48},  {"num_hidden_layers", 2},    {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"vocab_size", 50},          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},     {"rope_theta", 10000.0},     {"hidden_act", "silu"},
          {"tie_word_embeddings", false}};
}

// The reference works token by token in double, with tensors read straight from the checkpoint.
class Reference {
 public:
  Reference(const ModelWeights& w, int64_t layer) : w_(w), cfg_(w.config()) {
    prefix_ = "model.layers." + std::to_string(layer) + ".";
    layout_ = &w.layout().layers[static_cast<size_t>(layer)];
  }

  Tensor t(const std::string& local) const {
    return w_.tensor(prefix_ + local, c10::kCPU, at::kDouble);
  }
  Tensor linear(const std::string& local, const Tensor& x) const {  // x: [in]
    for (const auto& m : layout_->linears)
      if (m.local_name == local) {
        Tensor y = w_.linear_weight(*layout_, m, c10::kCPU, at::kDouble).mv(x);
        return m.has_bias ? y + t(local + ".bias") : y;
      }
    ADD_FAILURE() << "no module " << local;
    return {};
  }
  Tensor norm(const Tensor& x, const Tensor& g) const {
    return g * x / std::sqrt(x.pow(2).mean().item<double>() + cfg_.rms_norm_eps);
  }
  Tensor rope(const Tensor& x, int64_t p) const {  // x: [hd], default rope
    const int64_t hd = x.size(0), half = hd / 2;
    Tensor out = x.clone();
    for (int64_t i = 0; i < half; ++i) {
      const double a = p * std::pow(cfg_.rope_theta, -2.0 * i / hd);
      const double x1 = x[i].item<double>(), x2 = x[i + half].item<double>();
      out[i] = x1 * std::cos(a) - x2 * std::sin(a);
      out[i + half] = x2 * std::cos(a) + x1 * std::sin(a);
    }
    return out;
  }
  Tensor attention(const Tensor& x, int64_t window) const {  // x: [T, d] -> h
    const int64_t T = x.size(0), H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads,
                  hd = cfg_.head_dim;
    std::vector<std::vector<Tensor>> q(T), k(T), v(T);
    for (int64_t p = 0; p < T; ++p) {
      const Tensor xn = norm(x[p], t("input_layernorm.weight"));
      const Tensor qa = linear("self_attn.q_proj", xn), ka = linear("self_attn.k_proj", xn),
                   va = linear("self_attn.v_proj", xn);
      for (int64_t h = 0; h < H; ++h) {
        Tensor qh = qa.narrow(0, h * hd, hd);
        if (cfg_.qk_norm) qh = norm(qh, t("self_attn.q_norm.weight"));
        q[p].push_back(rope(qh, p));
      }
      for (int64_t g = 0; g < KV; ++g) {
        Tensor kh = ka.narrow(0, g * hd, hd);
        if (cfg_.qk_norm) kh = norm(kh, t("self_attn.k_norm.weight"));
        k[p].push_back(rope(kh, p));
        v[p].push_back(va.narrow(0, g * hd, hd));
      }
    }
    Tensor h = x.clone();
    for (int64_t i = 0; i < T; ++i) {
      std::vector<Tensor> heads;
      for (int64_t hh = 0; hh < H; ++hh) {
        const int64_t g = hh / (H / KV);
        std::vector<double> s;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j <= i; ++j)
          if (window == 0 || i - j < window) {
            s.push_back(q[i][hh].dot(k[j][g]).item<double>() / std::sqrt(double(hd)));
            keys.push_back(j);
          }
        const double top = *std::max_element(s.begin(), s.end());
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - top));
        Tensor o = at::zeros({hd}, at::kDouble);
        for (size_t n = 0; n < keys.size(); ++n) o += v[keys[n]][g] * (s[n] / z);
        heads.push_back(o);
      }
      h[i] += linear("self_attn.o_proj", at::cat(heads));
    }
    return h;
  }
  Tensor swiglu(const std::string& p, const std::string& g, const std::string& u,
                const std::string& d, const Tensor& x) const {
    return linear(p + d, at::silu(linear(p + g, x)) * linear(p + u, x));
  }
  // The MLP (dense or MoE) of one token; records which experts the token chose.
  Tensor mlp(const Tensor& x, std::vector<int64_t>* chosen) const {
    if (!layout_->moe) return swiglu("mlp.", "gate_proj", "up_proj", "down_proj", x);
    const bool mixtral = cfg_.family == ModelFamily::Mixtral;
    const std::string block = mixtral ? "block_sparse_moe." : "mlp.";
    const Tensor p = at::softmax(linear(block + "gate", x), 0);
    std::vector<std::pair<double, int64_t>> ranked;
    for (int64_t e = 0; e < p.size(0); ++e) ranked.emplace_back(-p[e].item<double>(), e);
    std::sort(ranked.begin(), ranked.end());
    double total = 0;
    for (int64_t n = 0; n < cfg_.num_experts_per_tok; ++n) total -= ranked[n].first;
    Tensor y = at::zeros_like(x);
    for (int64_t n = 0; n < cfg_.num_experts_per_tok; ++n) {
      const int64_t e = ranked[n].second;
      chosen->push_back(e);
      double weight = -ranked[n].first;
      if (mixtral || cfg_.norm_topk_prob) weight /= total;
      const std::string ep = block + "experts." + std::to_string(e) + ".";
      y += weight * (mixtral ? swiglu(ep, "w1", "w3", "w2", x)
                             : swiglu(ep, "gate_proj", "up_proj", "down_proj", x));
    }
    if (cfg_.shared_expert_intermediate_size > 0)
      y += at::sigmoid(linear("mlp.shared_expert_gate", x)) *
           swiglu("mlp.shared_expert.", "gate_proj", "up_proj", "down_proj", x);
    return y;
  }
  Tensor mlp_block(const Tensor& h, std::vector<std::vector<int64_t>>* routes) const {
    Tensor out = h.clone();
    routes->assign(static_cast<size_t>(h.size(0)), {});
    for (int64_t i = 0; i < h.size(0); ++i)
      out[i] += mlp(norm(h[i], t("post_attention_layernorm.weight")), &(*routes)[i]);
    return out;
  }

 private:
  const ModelWeights& w_;
  const ModelConfig& cfg_;
  std::string prefix_;
  const DecoderLayerLayout* layout_;
};

// Records each linear's input and the routing.
struct Recorder : LinearInputObserver {
  std::map<std::string, std::vector<Tensor>> inputs;
  std::vector<MoeRouting> routings;
  void observe_input(const LinearModule& m, const Tensor& x) override {
    inputs[m.local_name].push_back(x.clone());
  }
  void observe_routing(const DecoderLayerLayout&, const MoeRouting& r) override {
    routings.push_back(r);
  }
};

struct LayerCase {
  std::string name;
  json config;
  int64_t window = 0;  // what the reference should apply
};

void PrintTo(const LayerCase& c, std::ostream* os) { *os << c.name; }

class DecoderLayerVsReference : public ::testing::TestWithParam<LayerCase> {};

TEST_P(DecoderLayerVsReference, MatchesPerTokenReference) {
  const LayerCase& c = GetParam();
  test::TempDir dir;
  write_random_model(c.config, dir / "m", 7);
  const ModelWeights w = ModelWeights::open(dir / "m");
  const int64_t T = 12;
  at::manual_seed(11);
  const Tensor x = at::randn({2, T, w.config().hidden_size});
  const RotaryTables rope = make_rotary_tables(w.config(), T, c10::kCPU, at::kFloat);
  for (int64_t l = 0; l < w.config().num_hidden_layers; ++l) {
    SCOPED_TRACE(c.name + " layer " + std::to_string(l));
    const DecoderLayer layer = DecoderLayer::load(w, l, {});
    Recorder rec;
    const Tensor h = layer.attention_block(x, rope, &rec);
    const Tensor out = layer.mlp_block(h, &rec);
    EXPECT_TRUE(at::allclose(layer.forward(x, rope), out, 1e-6, 1e-6));
    const Reference ref(w, l);
    for (int64_t b = 0; b < 2; ++b) {
      const Tensor ref_h = ref.attention(x[b].to(at::kDouble), c.window);
      EXPECT_TRUE(at::allclose(h[b].to(at::kDouble), ref_h, 1e-4, 1e-4))
          << (h[b].to(at::kDouble) - ref_h).abs().max().item<double>();
      // The MLP/MoE block from the same input, so its check is independent of attention error.
      std::vector<std::vector<int64_t>> routes;
      const Tensor ref_out = ref.mlp_block(h[b].to(at::kDouble), &routes);
      EXPECT_TRUE(at::allclose(out[b].to(at::kDouble), ref_out, 1e-4, 1e-4))
          << (out[b].to(at::kDouble) - ref_out).abs().max().item<double>();
      if (!w.layout().layers[l].moe) continue;
      // Routing exposed to the observer: the expert sets chosen per token, highest first.
      ASSERT_EQ(rec.routings.size(), 1u);
      const Tensor chosen = rec.routings[0].top_experts;
      for (int64_t i = 0; i < T; ++i)
        for (size_t n = 0; n < routes[i].size(); ++n)
          EXPECT_EQ(chosen[b * T + i][n].item<int64_t>(), routes[i][n]);
    }
    if (!w.layout().layers[l].moe) continue;
    // Each expert saw exactly the tokens routed to it.
    const MoeRouting& r = rec.routings[0];
    const bool mixtral = w.config().family == ModelFamily::Mixtral;
    int64_t routed = 0;
    for (size_t e = 0; e < r.experts.size(); ++e) {
      const Tensor tokens = r.experts[e].tokens;
      routed += tokens.numel();
      const std::string gate = (mixtral ? "block_sparse_moe.experts." : "mlp.experts.") +
                               std::to_string(e) + (mixtral ? ".w1" : ".gate_proj");
      const Tensor router_input = rec.inputs.at(mixtral ? "block_sparse_moe.gate" : "mlp.gate")[0];
      if (tokens.numel() == 0) {
        EXPECT_EQ(rec.inputs.count(gate), 0u);
        continue;
      }
      ASSERT_EQ(rec.inputs.at(gate).size(), 1u);
      EXPECT_TRUE(at::equal(rec.inputs.at(gate)[0], router_input.index_select(0, tokens)));
      EXPECT_TRUE((r.top_experts.index_select(0, tokens) == int64_t(e)).any(1).all().item<bool>());
    }
    EXPECT_EQ(routed, 2 * T * w.config().num_experts_per_tok);
  }
}

std::vector<LayerCase> layer_cases() {
  std::vector<LayerCase> cases;
  json llama = base_config("llama", "LlamaForCausalLM");
  llama["attention_bias"] = true;
  llama["mlp_bias"] = true;
  cases.push_back({"llama_biases", llama});
  json mistral = base_config("mistral", "MistralForCausalLM");
  mistral["sliding_window"] = 5;
  cases.push_back({"mistral_sliding_window", mistral, 5});
  cases.push_back({"qwen2", base_config("qwen2", "Qwen2ForCausalLM")});
  json qwen3 = base_config("qwen3", "Qwen3ForCausalLM");
  qwen3["head_dim"] = 16;  // differs from hidden / heads
  cases.push_back({"qwen3_qk_norm", qwen3});
  json qwen2_sw = base_config("qwen2", "Qwen2ForCausalLM");
  qwen2_sw["use_sliding_window"] = true;
  qwen2_sw["sliding_window"] = 4;
  qwen2_sw["layer_types"] = {"sliding_attention", "sliding_attention"};
  cases.push_back({"qwen2_layer_types", qwen2_sw, 4});
  json mixtral = base_config("mixtral", "MixtralForCausalLM");
  mixtral["num_local_experts"] = 4;
  mixtral["num_experts_per_tok"] = 2;
  cases.push_back({"mixtral", mixtral});
  json qwen2_moe = base_config("qwen2_moe", "Qwen2MoeForCausalLM");
  qwen2_moe.update({{"num_experts", 4},
                    {"num_experts_per_tok", 2},
                    {"moe_intermediate_size", 24},
                    {"shared_expert_intermediate_size", 40},
                    {"norm_topk_prob", false}});
  cases.push_back({"qwen2_moe_shared_expert", qwen2_moe});
  json qwen3_moe = base_config("qwen3_moe", "Qwen3MoeForCausalLM");
  qwen3_moe.update({{"num_experts", 5},
                    {"num_experts_per_tok", 3},
                    {"moe_intermediate_size", 24},
                    {"norm_topk_prob", true},
                    {"head_dim", 8},
                    {"mlp_only_layers", {1}}});  // layer 1 dense
  cases.push_back({"qwen3_moe_mlp_only_layers", qwen3_moe});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Architectures, DecoderLayerVsReference,
                         ::testing::ValuesIn(layer_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(DecoderLayer, QwenSlidingWindowWithoutLayerTypesIsRefusedOnlyBeyondTheWindow) {
  json cfg = base_config("qwen2", "Qwen2ForCausalLM");
  cfg["use_sliding_window"] = true;
  cfg["sliding_window"] = 8;
  test::TempDir dir;
  write_random_model(cfg, dir / "m", 1);
  const ModelWeights w = ModelWeights::open(dir / "m");
  const DecoderLayer layer = DecoderLayer::load(w, 0, {});
  const RotaryTables rope = make_rotary_tables(w.config(), 16, c10::kCPU, at::kFloat);
  EXPECT_NO_THROW(layer.forward(at::randn({1, 8, 32}), rope));
  test::expect_bad_input([&] { layer.forward(at::randn({1, 9, 32}), rope); },
                         "sequences of 9 tokens exceed sliding_window 8");
}

TEST(DecoderLayer, SetWeightReplacesAModuleAndChecksItsShape) {
  test::TempDir dir;
  write_random_model(base_config("llama", "LlamaForCausalLM"), dir / "m", 2);
  const ModelWeights w = ModelWeights::open(dir / "m");
  DecoderLayer layer = DecoderLayer::load(w, 0, {});
  const RotaryTables rope = make_rotary_tables(w.config(), 4, c10::kCPU, at::kFloat);
  const Tensor x = at::randn({1, 4, 32});
  const Tensor before = layer.mlp_block(x);
  layer.set_weight("mlp.down_proj", at::zeros({32, 48}));
  EXPECT_TRUE(at::equal(layer.mlp_block(x), x));  // the MLP now adds nothing
  EXPECT_FALSE(at::equal(before, x));
  EXPECT_THROW(layer.set_weight("mlp.down_proj", at::zeros({48, 32})), c10::Error);
}

}  // namespace
}  // namespace sarqc

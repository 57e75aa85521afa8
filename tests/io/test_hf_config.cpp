#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include <nlohmann/json.hpp>

#include "sarqc/io/hf_config.h"
#include "test_support.h"

namespace sarqc {
namespace {

using nlohmann::json;

json llama_base() {
  return {{"model_type", "llama"},         {"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 64},             {"intermediate_size", 172},
          {"num_hidden_layers", 5},        {"num_attention_heads", 8},
          {"num_key_value_heads", 4},      {"vocab_size", 512},
          {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-5},
          {"hidden_act", "silu"}};
}

ModelConfig parse(const json& j) { return parse_model_config(j, "config.json"); }

TEST(HfConfig, FixturesMatchTheirReadme) {
  SARQC_REQUIRE_FIXTURES();
  const ModelConfig s = load_model_config(test::fixture_model("stories260K"));
  EXPECT_EQ(s.family, ModelFamily::Llama);
  EXPECT_EQ(s.architecture, "LlamaForCausalLM");
  EXPECT_EQ(s.hidden_size, 64);
  EXPECT_EQ(s.intermediate_size, 172);
  EXPECT_EQ(s.num_hidden_layers, 5);
  EXPECT_EQ(s.num_attention_heads, 8);
  EXPECT_EQ(s.num_key_value_heads, 4);
  EXPECT_EQ(s.head_dim, 8);
  EXPECT_EQ(s.vocab_size, 512);
  EXPECT_EQ(s.max_position_embeddings, 512);
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_EQ(s.bos_token_id, 1);
  EXPECT_EQ(s.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(s.torch_dtype, "float32");

  const ModelConfig b = load_model_config(test::fixture_model("babyllama-tok105"));
  EXPECT_EQ(b.hidden_size, 128);
  EXPECT_EQ(b.intermediate_size, 352);
  EXPECT_EQ(b.head_dim, 16);
  EXPECT_EQ(b.vocab_size, 105);
  EXPECT_EQ(b.max_position_embeddings, 256);
}

TEST(HfConfig, DefaultsFollowTransformers) {
  json j = llama_base();
  j.erase("num_key_value_heads");
  j.erase("hidden_act");
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.num_key_value_heads, 8);  // MHA when absent
  EXPECT_EQ(c.head_dim, 8);             // hidden / heads
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Default);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm || c.is_moe());
  EXPECT_FALSE(c.sliding_window.has_value());
}

TEST(HfConfig, BiasesAndNormsPerFamily) {
  json llama = llama_base();
  llama["attention_bias"] = true;
  llama["mlp_bias"] = true;
  const ModelConfig l = parse(llama);
  EXPECT_TRUE(l.qkv_bias && l.o_bias && l.mlp_bias);

  json qwen2 = llama_base();
  qwen2["model_type"] = "qwen2";
  qwen2["architectures"] = {"Qwen2ForCausalLM"};
  const ModelConfig q2 = parse(qwen2);
  EXPECT_TRUE(q2.qkv_bias);
  EXPECT_FALSE(q2.o_bias);
  EXPECT_FALSE(q2.qk_norm);

  json qwen3 = llama_base();
  qwen3["model_type"] = "qwen3";
  qwen3["head_dim"] = 16;  // differs from hidden/heads
  const ModelConfig q3 = parse(qwen3);
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_FALSE(q3.qkv_bias);
  EXPECT_EQ(q3.head_dim, 16);
}

TEST(HfConfig, SlidingWindowRules) {
  json mistral = llama_base();
  mistral["model_type"] = "mistral";
  mistral["sliding_window"] = 4096;
  EXPECT_EQ(parse(mistral).sliding_window, 4096);
  mistral["sliding_window"] = nullptr;
  EXPECT_FALSE(parse(mistral).sliding_window.has_value());

  json qwen = llama_base();
  qwen["model_type"] = "qwen2";
  qwen["sliding_window"] = 4096;  // ignored unless use_sliding_window
  EXPECT_FALSE(parse(qwen).sliding_window.has_value());
  qwen["use_sliding_window"] = true;
  EXPECT_EQ(parse(qwen).sliding_window, 4096);
}

TEST(HfConfig, RopeScalingVariants) {
  json j = llama_base();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  ModelConfig c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // older key name
  c = parse(j);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Linear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);

  // transformers >= 5 layout
  json v5 = llama_base();
  v5["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 1e6}, {"factor", 4.0}};
  c = parse(v5);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Dynamic);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 1.0);

  // YaRN (Qwen's long-context setting): transformers' defaults and attention factor.
  json yarn = llama_base();
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0},
                          {"original_max_position_embeddings", 128}};
  c = parse(yarn);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Yarn);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 128);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_TRUE(c.rope_scaling.truncate);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 0.1 * std::log(4.0) + 1.0);
  // mscale and mscale_all_dim (DeepSeek's) set the attention factor as a ratio; without factor
  // and original length, factor = max_position_embeddings / original = 1 and nothing scales.
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"mscale", 2.0},
                          {"mscale_all_dim", 1.0}, {"beta_fast", 16}, {"truncate", false}};
  c = parse(yarn);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 512);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor,
                   (0.2 * std::log(4.0) + 1.0) / (0.1 * std::log(4.0) + 1.0));
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_FALSE(c.rope_scaling.truncate);
  yarn["rope_scaling"] = {{"rope_type", "yarn"}};
  c = parse(yarn);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 1.0);
}

TEST(HfConfig, MixtralDefaults) {
  json j = llama_base();
  j["model_type"] = "mixtral";
  j["num_local_experts"] = 8;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.expert_intermediate_size(), 172);
  for (int l = 0; l < 5; ++l) EXPECT_TRUE(c.layer_is_moe(l));
}

TEST(HfConfig, QwenMoeLayerSelection) {
  json j = llama_base();
  j["model_type"] = "qwen2_moe";
  j["num_experts"] = 4;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 32;
  j["shared_expert_intermediate_size"] = 96;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.expert_intermediate_size(), 32);
  EXPECT_FALSE(c.norm_topk_prob);
  // (l + 1) % 2 == 0 and l not in mlp_only_layers: only layer 1 (layer 3 is excluded).
  const std::vector<bool> expected = {false, true, false, false, false};
  for (int l = 0; l < 5; ++l) EXPECT_EQ(c.layer_is_moe(l), expected[l]) << l;

  json q3 = j;
  q3["model_type"] = "qwen3_moe";
  q3.erase("shared_expert_intermediate_size");
  q3["norm_topk_prob"] = true;
  const ModelConfig c3 = parse(q3);
  EXPECT_EQ(c3.shared_expert_intermediate_size, 0);
  EXPECT_TRUE(c3.norm_topk_prob && c3.qk_norm);
  // transformers >= 5 saves qwen3_moe's expert count as num_local_experts.
  q3.erase("num_experts");
  q3["num_local_experts"] = 4;
  EXPECT_EQ(parse(q3).num_experts, 4);
}

// Gemma 3 as transformers 4 saved it (rope_local_base_freq, sliding_window_pattern) and as
// transformers 5 saves it (rope_parameters per layer type, layer_types).
TEST(HfConfig, Gemma3Text) {
  json j = {{"model_type", "gemma3_text"},    {"architectures", {"Gemma3ForCausalLM"}},
            {"hidden_size", 640},             {"intermediate_size", 2048},
            {"num_hidden_layers", 7},         {"num_attention_heads", 4},
            {"num_key_value_heads", 1},       {"head_dim", 256},
            {"vocab_size", 512},              {"rms_norm_eps", 1e-6},
            {"query_pre_attn_scalar", 256},   {"sliding_window", 512},
            {"rope_theta", 1e6},              {"rope_local_base_freq", 1e4},
            {"sliding_window_pattern", 6},    {"hidden_activation", "gelu_pytorch_tanh"},
            {"tie_word_embeddings", true},    {"final_logit_softcapping", nullptr},
            {"attn_logit_softcapping", nullptr}};
  ModelConfig c = parse(j);
  EXPECT_EQ(c.family, ModelFamily::Gemma3Text);
  EXPECT_EQ(c.activation, Activation::GeluTanh);
  EXPECT_TRUE(c.qk_norm && c.sandwich_norms);
  EXPECT_DOUBLE_EQ(c.norm_offset, 1.0);
  EXPECT_DOUBLE_EQ(c.embed_scale, std::sqrt(640.0));
  EXPECT_DOUBLE_EQ(c.attention_scale, 1.0 / 16.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_local_theta, 1e4);
  ASSERT_EQ(c.layer_types.size(), 7u);
  for (int l = 0; l < 7; ++l)  // every sixth layer is global
    EXPECT_EQ(c.layer_types[l], l == 5 ? "full_attention" : "sliding_attention") << l;
  EXPECT_EQ(c.sliding_window, 512);

  json v5 = j;
  for (const char* k : {"rope_theta", "rope_local_base_freq", "sliding_window_pattern"}) v5.erase(k);
  v5["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention",
                       "full_attention",    "sliding_attention", "full_attention",
                       "sliding_attention"};
  v5["rope_parameters"] = {
      {"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1e6}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}};
  c = parse(v5);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Linear);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_local_theta, 1e4);
  EXPECT_EQ(c.layer_types[1], "full_attention");
  // As GPTQModel 7.7 saves it: a flat rope_type and a {"global", "local"} rope_theta beside the
  // per-layer-type entries, which transformers reads and so does sarqc.
  json gptqmodel = v5;
  gptqmodel["rope_parameters"]["rope_type"] = "default";
  gptqmodel["rope_parameters"]["rope_theta"] = {{"global", 1e6}, {"local", 1e4}};
  c = parse(gptqmodel);
  EXPECT_EQ(c.rope_scaling.type, RopeType::Linear);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rope_local_theta, 1e4);

  const std::vector<std::pair<std::function<void(json&)>, std::string>> bad = {
      {[](json& b) { b["final_logit_softcapping"] = 30.0; },
       "final_logit_softcapping is not supported"},
      {[](json& b) { b["hidden_activation"] = "silu"; },
       "hidden_activation 'silu' is not supported (expected 'gelu_pytorch_tanh')"},
      {[](json& b) { b["use_bidirectional_attention"] = true; },
       "use_bidirectional_attention is not supported"},
      {[](json& b) {
         b["rope_parameters"] = {{"sliding_attention", {{"rope_type", "linear"}, {"factor", 2.0}}}};
       },
       "rope type 'linear' is not supported for sliding layers"},
      {[](json& b) { b["layer_types"] = json::array({"global", "a", "b", "c", "d", "e", "f"}); },
       "field 'layer_types' must be 'sliding_attention' or 'full_attention' per layer"},
  };
  for (const auto& [edit, expected] : bad) {
    json b = j;
    edit(b);
    test::expect_bad_input([&] { parse(b); }, expected);
  }
}

TEST(HfConfig, EosMayBeAList) {
  json j = llama_base();
  j["eos_token_id"] = {128001, 128009};
  EXPECT_EQ(parse(j).eos_token_ids, (std::vector<int64_t>{128001, 128009}));
}

struct BadConfig {
  const char* label;
  std::function<void(json&)> edit;
  const char* expected;
};

TEST(HfConfig, BadConfigsNameTheFieldAndWhatWasExpected) {
  const std::vector<BadConfig> cases = {
      {"unknown model type", [](json& j) { j["model_type"] = "gpt2"; },
       "model_type 'gpt2' is not supported (supported: llama, mistral, qwen2, qwen3, mixtral, "
       "qwen2_moe, qwen3_moe, gemma3_text)"},
      {"no model type", [](json& j) { j.erase("model_type"); }, "missing string field 'model_type'"},
      {"missing hidden_size", [](json& j) { j.erase("hidden_size"); },
       "field 'hidden_size' is required for model_type 'llama'"},
      {"string hidden_size", [](json& j) { j["hidden_size"] = "64"; },
       "field 'hidden_size' must be a positive integer, got \"64\""},
      {"zero layers", [](json& j) { j["num_hidden_layers"] = 0; },
       "field 'num_hidden_layers' must be a positive integer, got 0"},
      {"gqa mismatch", [](json& j) { j["num_key_value_heads"] = 3; },
       "num_attention_heads 8 is not a multiple of num_key_value_heads 3"},
      {"activation", [](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act 'gelu' is not supported"},
      {"missing eps", [](json& j) { j.erase("rms_norm_eps"); }, "field 'rms_norm_eps' is required"},
      {"yarn without a factor or max_position_embeddings",
       [](json& j) {
         j.erase("max_position_embeddings");
         j["rope_scaling"] = {{"rope_type", "yarn"}, {"original_max_position_embeddings", 64}};
       },
       "rope type 'yarn' needs a positive 'factor'"},
      {"longrope", [](json& j) { j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4.0}}; },
       "rope type 'longrope' is not supported (supported: default, linear, dynamic, llama3, yarn)"},
      {"qwen3_moe expert counts disagree",
       [](json& j) {
         j["model_type"] = "qwen3_moe";
         j["num_experts"] = 4;
         j["num_local_experts"] = 8;
         j["num_experts_per_tok"] = 2;
         j["moe_intermediate_size"] = 32;
       },
       "num_experts 4 and num_local_experts 8 disagree"},
      {"llama3 incomplete",
       [](json& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; },
       "rope type 'llama3' needs field 'low_freq_factor'"},
      {"nested rope parameters",
       [](json& j) { j["rope_parameters"] = {{"full_attention", {{"rope_theta", 1e6}}}}; },
       "per-layer-type rope parameters are not supported"},
      {"odd head_dim", [](json& j) { j["head_dim"] = 7; }, "head_dim 7 must be even"},
      {"tie flag type", [](json& j) { j["tie_word_embeddings"] = "yes"; },
       "field 'tie_word_embeddings' must be true or false"},
      {"too many experts per token",
       [](json& j) {
         j["model_type"] = "mixtral";
         j["num_local_experts"] = 2;
         j["num_experts_per_tok"] = 3;
       },
       "num_experts_per_tok 3 exceeds the number of experts 2"},
      {"mlp_only_layers out of range",
       [](json& j) {
         j["model_type"] = "qwen3_moe";
         j["num_experts"] = 4;
         j["num_experts_per_tok"] = 2;
         j["moe_intermediate_size"] = 32;
         j["mlp_only_layers"] = {9};
       },
       "field 'mlp_only_layers' must be an array of layer indices in [0, 5)"},
      {"qwen2_moe without shared width",
       [](json& j) {
         j["model_type"] = "qwen2_moe";
         j["num_experts"] = 4;
         j["num_experts_per_tok"] = 2;
         j["moe_intermediate_size"] = 32;
       },
       "field 'shared_expert_intermediate_size' is required for model_type 'qwen2_moe'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    json j = llama_base();
    c.edit(j);
    test::expect_bad_input([&] { parse(j); }, c.expected);
  }
}

TEST(HfConfig, MissingOrInvalidFile) {
  test::TempDir dir;
  test::expect_bad_input([&] { load_model_config(dir.path()); }, "config.json: not found");
  test::write_bytes(dir / "config.json", "{\"model_type\": ");
  test::expect_bad_input([&] { load_model_config(dir.path()); }, "config.json: not valid JSON");
}

}  // namespace
}  // namespace sarqc

// Every model family sarqc reads against transformers, the implementation its users run: small
// random-weight models built and saved by transformers itself (AutoConfig for each model type,
// odd sizes that catch transposes: head_dim != hidden / heads, heads != KV heads, windows longer
// than a sliding window, the rotary scalings of real checkpoints), then
//  1. sarqc's next-token log-probabilities equal transformers' on the same token ids, and
//  2. sarqc's GPTQ checkpoint of each family (W4 g32 sym, W3 g32 asym) loads in transformers'
//     GPTQ path with the perplexity `sarqc eval` computes (within 0.5 %).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/pipeline/quantize.h"
#include "python_reference.h"
#include "reference_forward.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int64_t kVocab = 256;

struct Family {
  std::string name, model_type;
  json config;  // overrides of transformers' AutoConfig defaults
  bool moe = false;
};

std::vector<Family> families() {
  const json base = {{"vocab_size", kVocab},        {"hidden_size", 64},
                     {"intermediate_size", 96},     {"num_hidden_layers", 3},
                     {"num_attention_heads", 4},    {"num_key_value_heads", 2},
                     {"max_position_embeddings", 256}, {"initializer_range", 0.1}};
  auto with = [&](const json& extra, const json& more = json::object()) {
    json c = base;
    c.update(extra);
    c.update(more);
    return c;
  };
  const json moe = {{"num_experts", 4}, {"num_experts_per_tok", 2}, {"moe_intermediate_size", 32}};
  return {
      {"llama", "llama", with({{"head_dim", 24}})},
      // Llama 3.1's scaling with an original context shorter than the windows.
      {"llama3_rope", "llama",
       with({{"rope_parameters",
              {{"rope_type", "llama3"}, {"rope_theta", 10000.0}, {"factor", 8.0},
               {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
               {"original_max_position_embeddings", 32}}}})},
      {"llama_linear_rope", "llama",
       with({{"rope_parameters",
              {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}}}})},
      // A sliding window shorter than the windows.
      {"mistral", "mistral", with({{"head_dim", 24}, {"sliding_window", 16}})},
      {"qwen2", "qwen2", with(json::object())},  // q/k/v biases
      // QK-norm; Qwen's long-context YaRN.
      {"qwen3_yarn", "qwen3",
       with({{"head_dim", 24},
             {"rope_parameters",
              {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0},
               {"original_max_position_embeddings", 32}}}})},
      {"mixtral", "mixtral",
       with({{"head_dim", 24}, {"num_local_experts", 4}, {"num_experts_per_tok", 2}}), true},
      {"qwen2_moe", "qwen2_moe", with(moe, {{"shared_expert_intermediate_size", 64}}), true},
      // A dense layer among the sparse ones; norm_topk_prob on (Qwen3-30B-A3B's setting).
      {"qwen3_moe", "qwen3_moe",
       with(moe, {{"head_dim", 24}, {"norm_topk_prob", true}, {"mlp_only_layers", {1}}}), true},
      // (1 + w) norms around both sublayers, QK-norm, scaled embeddings, tanh GELU, sliding
      // layers (window shorter than the text) with the local rope base, a query scale other
      // than head_dim's, tied embeddings; then with Gemma 3 4B's linear scaling of the global rope.
      {"gemma3", "gemma3_text",
       with({{"head_dim", 24},
             {"query_pre_attn_scalar", 32},
             {"sliding_window", 16},
             {"layer_types", {"sliding_attention", "full_attention", "sliding_attention"}}})},
      {"gemma3_scaled_rope", "gemma3_text",
       with({{"head_dim", 24},
             {"sliding_window", 16},
             {"layer_types", {"sliding_attention", "full_attention", "full_attention"}},
             {"rope_parameters",
              {{"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1e6}}},
               {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}}}})},
  };
}

struct Windows {
  at::Tensor inputs, targets;  // [2, 48] int64
};

Windows random_windows(uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> id(0, kVocab - 1);
  at::Tensor ids = at::empty({2, 49}, at::kLong);
  auto a = ids.accessor<int64_t, 2>();
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 49; ++j) a[i][j] = id(rng);
  return {ids.narrow(1, 0, 48).contiguous(), ids.narrow(1, 1, 48).contiguous()};
}

test::TargetLogprobs sarqc_logprobs(const fs::path& folder, const Windows& w) {
  return test::sarqc_logprobs(folder, w.inputs, w.targets);
}

class Families : public ::testing::Test {
 protected:
  // One Python process builds and scores every family (transformers' import dominates).
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    json jobs = json::array();
    uint32_t seed = 0;
    for (const Family& f : families()) {
      const Windows w = random_windows(seed);
      jobs.push_back({{"name", f.name},
                      {"model_type", f.model_type},
                      {"config", f.config},
                      {"folder", (dir_->path() / f.name).string()},
                      {"seed", seed++},
                      {"inputs", test::id_rows(w.inputs)},
                      {"targets", test::id_rows(w.targets)}});
    }
    reference_ = new json(test::run_python_reference("family_reference/build_and_score.py", jobs, dir_->path(),
                                     {"requirements-test.txt", "requirements-torch.txt"}));
  }
  static void TearDownTestSuite() {
    delete reference_;
    delete dir_;
  }
  static test::TempDir* dir_;
  static json* reference_;
};
test::TempDir* Families::dir_ = nullptr;
json* Families::reference_ = nullptr;

TEST_F(Families, ForwardEqualsTransformers) {
  ASSERT_TRUE(reference_->is_object()) << "the reference did not run";
  uint32_t seed = 0;
  for (const Family& f : families()) {
    SCOPED_TRACE(f.name);
    const Windows w = random_windows(seed++);
    const json& r = reference_->value(f.name, json{{"error", "no result"}});
    ASSERT_FALSE(r.contains("error")) << r.dump();
    const fs::path folder = dir_->path() / f.name;
    const test::TargetLogprobs forward = sarqc_logprobs(folder, w);
    const at::Tensor& ours = forward.logprobs;
    const at::Tensor theirs = test::nested_to_tensor(r.at("target_logprobs"));
    const double tolerance = test::fp32_forward_tolerance(
        ModelWeights::open(folder).config(), w.inputs.size(1), forward.max_abs_logit);
    const double max_diff = (ours - theirs).abs().max().item<double>();
    std::printf("family %-18s max |log p sarqc - log p transformers| = %.2e (tolerance %.2e), "
                "mean NLL %.6f\n",
                f.name.c_str(), max_diff, tolerance, -ours.mean().item<double>());
    EXPECT_LT(max_diff, tolerance);
    // Not a uniform model: the test would not see a wrong attention or MLP.
    EXPECT_GT(std::abs(-ours.mean().item<double>() - std::log(double(kVocab))), 0.05);
  }
}

TEST_F(Families, QuantizedCheckpointsLoadInTransformersWithSarqcsPerplexity) {
  ASSERT_TRUE(reference_->is_object()) << "the reference did not run";
  // Calibration: random token ids (the models have no tokenizer).
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> id(0, kVocab - 1);
  json calib = json::array();
  for (int s = 0; s < 8; ++s) {
    json row = json::array();
    for (int t = 0; t < 48; ++t) row.push_back(id(rng));
    calib.push_back(row);
  }
  test::write_bytes(dir_->path() / "calib.json", calib.dump());
  struct Grid {
    std::string name;
    QuantGrid grid;
  };
  const std::vector<Grid> grids = {{"w4g32sym", {4, 32, true}}, {"w3g32asym", {3, 32, false}}};
  json jobs = json::array();
  uint32_t seed = 0;
  std::map<std::string, Windows> windows;
  for (const Family& f : families()) {
    const Windows w = random_windows(seed++);
    for (const Grid& g : grids) {
      QuantizeOptions o;
      o.model_dir = dir_->path() / f.name;
      o.out_dir = dir_->path() / "q" / (f.name + "-" + g.name);
      o.calib_tokens = dir_->path() / "calib.json";
      o.nsamples = 8;
      o.seqlen = 48;
      o.grid = g.grid;
      o.moe_min_tokens = 1;
      o.progress = false;
      quantize(o);
      windows[o.out_dir.string()] = w;
      jobs.push_back({{"folder", o.out_dir.string()},
                      {"inputs", test::id_rows(w.inputs)},
                      {"targets", test::id_rows(w.targets)},
                      {"logits", false}});
    }
  }
  const json scores = test::run_python_reference("loader_reference/score.py", jobs, dir_->path(),
                                 {"requirements-test.txt", "requirements-torch.txt",
                                  "requirements-loader.txt"});
  ASSERT_TRUE(scores.is_object());
  for (const Family& f : families()) {
    for (const Grid& g : grids) {
      const fs::path folder = dir_->path() / "q" / (f.name + "-" + g.name);
      SCOPED_TRACE(folder.filename().string());
      const json& r = scores.at(folder.string());
      const std::string problem =
          r.contains("error") ? r.at("error").get<std::string>()
          : r.value("missing_keys", json::array()).empty() ? ""
                                                            : "missing " + r.at("missing_keys").dump();
      if (f.moe) {
        // transformers >= 5 fuses MoE experts into 3-D parameters, which its GPTQ path does
        // not replace: the per-expert tensors (vLLM's and GPTQModel's layout) are left out.
        EXPECT_NE(problem.find("experts"), std::string::npos)
            << "transformers now reads a quantized " << f.model_type << " (ppl "
            << std::exp(r.value("mean_nll", 0.0)) << ")"
            << " (remove this limitation from the test and README), or fails otherwise: "
            << problem;
        continue;
      }
      ASSERT_EQ(problem, "") << r.value("trace", "");
      const double ours = -sarqc_logprobs(folder, windows.at(folder.string())).logprobs.mean().item<double>();
      const double theirs = r.at("mean_nll").get<double>();
      std::printf("family %-28s ppl sarqc %.6f transformers %.6f (%+.4f %%), kernels %s\n",
                  folder.filename().c_str(), std::exp(ours), std::exp(theirs),
                  100 * (std::exp(theirs - ours) - 1), r.at("kernels").dump().c_str());
      EXPECT_NEAR(std::exp(theirs - ours), 1.0, 5e-3) << "perplexity differs by more than 0.5 %";
    }
  }
}

}  // namespace
}  // namespace sarqc

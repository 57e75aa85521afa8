#pragma once
// Synthetic checkpoints in HF format, built with the project's own code: random models of any
// supported architecture and shape (for tests), and mixture-of-experts models derived from a
// trained dense model (no small trained MoE model is available).
#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "sarqc/io/dtype.h"

namespace sarqc {

struct RandomModelOptions {
  Dtype dtype = Dtype::F32;  // the values are drawn in fp32 and stored in this dtype
  // Shards like hub checkpoints (model-XXXXX-of-YYYYY.safetensors + index) above this size.
  uint64_t max_shard_bytes = 5'000'000'000ULL;
};

// Writes dir/config.json (= `config`) and the safetensors shard(s) with seeded random weights
// for every tensor the layout expects: linears ~ N(0, 1/in_features), biases ~ N(0, 0.1²),
// norms ~ 1 + N(0, 0.1²), embeddings ~ N(0, 1). One tensor is in memory at a time, so models
// of real size (benchmarks) can be written. Throws like load_model_config on a bad config.
void write_random_model(const nlohmann::json& config, const std::filesystem::path& dir,
                        uint64_t seed, const RandomModelOptions& options = {});

struct MoeFromDenseOptions {
  std::string model_type = "mixtral";  // mixtral | qwen2_moe | qwen3_moe
  int64_t experts = 4;
  int64_t top_k = 2;
  // Each expert is the layer's dense MLP with every weight multiplied by (1 + noise·N(0, 1)).
  double noise = 0.05;
  uint64_t seed = 0;
  bool fused = false;  // store routed experts in the transformers >= 5 fused layout
};

// Turns a dense llama-architecture model (without biases) into a MoE checkpoint in `out_dir`:
// every layer becomes sparse with perturbed copies of its MLP as experts and a fresh router
// ~ N(0, 1/d). qwen2_moe adds q/k/v biases of zero and a shared expert that is an unperturbed
// copy of the MLP with a zero gate weight (gate 0.5); qwen3_moe adds q_norm/k_norm weights of one
// and sets norm_topk_prob. With noise 0, a mixtral result computes exactly the dense model.
// Tokenizer files are copied. Throws a bad-input Error naming the folder on unusable input.
void moe_from_dense(const std::filesystem::path& dense_dir, const std::filesystem::path& out_dir,
                    const MoeFromDenseOptions& options);

}  // namespace sarqc

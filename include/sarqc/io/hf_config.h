#pragma once
// HuggingFace config.json -> a typed, validated description of a supported decoder-only model.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sarqc {

enum class ModelFamily { Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2Moe, Qwen3Moe, Gemma3Text };

// The MLP's gate activation: SiLU, or GELU with the tanh approximation (Gemma).
enum class Activation { Silu, GeluTanh };

std::string_view model_type_name(ModelFamily family);  // "llama", "qwen2_moe", ...
const std::vector<std::string>& supported_model_types();

enum class RopeType { Default, Linear, Dynamic, Llama3, Yarn };
std::string_view rope_type_name(RopeType type);

struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;                        // linear, dynamic, llama3, yarn
  double low_freq_factor = 1.0;               // llama3
  double high_freq_factor = 4.0;              // llama3
  int64_t original_max_position_embeddings = 0;  // llama3, yarn
  // yarn: the correction range's rotation counts, whether its ends are rounded outwards, and
  // the factor on cos/sin (from factor, mscale and mscale_all_dim unless given).
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  bool truncate = true;
  double attention_factor = 1.0;
  double mscale = 0, mscale_all_dim = 0;
};

// A GPTQ-quantized checkpoint's config.json["quantization_config"] (docs/formats.md §7).
struct GptqQuantization {
  int bits = 4;
  int64_t group_size = 128;  // -1: per output channel
  bool desc_act = false;
  bool sym = true;
  bool v2 = false;  // checkpoint_format "gptq_v2": stored zeros are the true zeros
};

struct ModelConfig {
  ModelFamily family = ModelFamily::Llama;
  std::string model_type;    // as written in config.json
  std::string architecture;  // architectures[0], may be empty
  std::string torch_dtype;   // "float32", "bfloat16", ... ("" when absent)

  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense MLP width (mixtral: expert width)
  int64_t num_hidden_layers = 0;
  int64_t vocab_size = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;  // 0 when absent
  double rms_norm_eps = 0.0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;

  bool qkv_bias = false;  // q, k, v projections carry a bias
  bool o_bias = false;
  bool mlp_bias = false;
  bool qk_norm = false;   // per-head RMSNorm on q and k (qwen3, qwen3_moe, gemma3)

  // Gemma 3: norm weights stored as w and applied as (1 + w) in fp32; norms on both sides of
  // each sublayer (post_attention_layernorm on the attention output, pre_/post_feedforward_
  // layernorm around the MLP); embeddings times sqrt(hidden_size); scores scaled by
  // query_pre_attn_scalar^-1/2; sliding layers with their own rope base.
  Activation activation = Activation::Silu;
  double norm_offset = 0.0;
  bool sandwich_norms = false;
  double embed_scale = 1.0;
  double attention_scale = 0.0;  // 0: 1 / sqrt(head_dim)
  double rope_local_theta = 0.0;  // 0: every layer uses rope_theta and rope_scaling

  std::optional<int64_t> sliding_window;  // only when the model actually uses one
  bool use_sliding_window = false;        // qwen*: the switch next to sliding_window
  std::vector<std::string> layer_types;   // newer configs: "full_attention"/"sliding_attention"

  // Mixture of experts (num_experts == 0 for dense models).
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;            // qwen MoE expert width (mixtral: intermediate_size)
  int64_t shared_expert_intermediate_size = 0;  // qwen2_moe
  bool norm_topk_prob = false;
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;

  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;

  std::optional<GptqQuantization> quantization;  // present for GPTQ checkpoints

  bool is_moe() const { return num_experts > 0; }
  bool layer_is_moe(int64_t layer) const;
  int64_t expert_intermediate_size() const;  // width of one routed expert
};

// Parses and validates; `source` names the file in error messages.
ModelConfig parse_model_config(const nlohmann::json& config, const std::string& source);
// Reads DIR/config.json.
ModelConfig load_model_config(const std::filesystem::path& model_dir);

}  // namespace sarqc

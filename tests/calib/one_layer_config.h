#pragma once
// config.json of a one-layer model small enough for bit-exact stage tests: llama, or a 4-expert
// top-2 mixtral (write_random_model gives it weights).
#include <nlohmann/json.hpp>

namespace sarqc::test {

inline nlohmann::json one_layer_config(bool moe) {
  nlohmann::json c = {{"model_type", moe ? "mixtral" : "llama"},
                      {"architectures", {moe ? "MixtralForCausalLM" : "LlamaForCausalLM"}},
                      {"hidden_size", 32},
                      {"intermediate_size", 48},
                      {"num_hidden_layers", 1},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"vocab_size", 50},
                      {"max_position_embeddings", 64},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", false}};
  if (moe) c.update({{"num_local_experts", 4}, {"num_experts_per_tok", 2}});
  return c;
}

}  // namespace sarqc::test

#pragma once
// The tensors a supported architecture consists of: per decoder layer, every linear module with
// its shape, bias and calibration group, plus norms and the global tensors. One place that knows
// HF tensor names; the checkpoint is checked against it before any work starts.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sarqc/io/hf_config.h"

namespace sarqc {

class Checkpoint;

enum class LinearRole { Q, K, V, O, Gate, Up, Down, Router, SharedExpertGate };
std::string_view linear_role_name(LinearRole role);

inline constexpr int kNotExpert = -1;
inline constexpr int kSharedExpert = -2;

struct LinearModule {
  std::string name;        // full module name: "model.layers.0.self_attn.q_proj"
  std::string local_name;  // inside its layer: "self_attn.q_proj"
  LinearRole role = LinearRole::Q;
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool has_bias = false;
  bool quantizable = true;  // routers and the shared-expert gate stay in full precision
  int expert = kNotExpert;  // routed expert index, kSharedExpert, or kNotExpert
  bool stored_packed = false;  // GPTQ checkpoint: stored as qweight/qzeros/scales/g_idx

  std::string weight_name() const { return name + ".weight"; }
  std::string bias_name() const { return name + ".bias"; }
  int64_t numel() const { return in_features * out_features + (has_bias ? out_features : 0); }
  // Whether the GPTQ format can pack this module at `bits` (docs/formats.md §11 rules 2 and 3).
  bool packable(int bits) const;
};

struct NamedShape {
  std::string name;
  std::vector<int64_t> shape;
};

// "model.layers.3.input_layernorm.weight" in layer 3 -> "input_layernorm".
std::string norm_local_name(const NamedShape& norm, int64_t layer);

struct DecoderLayerLayout {
  int64_t index = 0;
  bool moe = false;
  std::vector<LinearModule> linears;  // in true-sequential order: q,k,v, o, gate,up, down
  std::vector<NamedShape> norms;      // input/post-attention norms, q_norm/k_norm
  // transformers >= 5 may store the routed experts of a MoE layer fused in two tensors
  // (fused_gate_up_name: [E, 2I, d], gate rows first; fused_down_name: [E, d, I]) and mixtral's
  // router as mlp.gate. Module names stay the per-expert ones; the weight loader slices.
  bool fused_experts = false;
  std::string fused_gate_up_name() const;
  std::string fused_down_name() const;
  // Where `module`'s weight is stored in this layer's checkpoint (differs only when fused).
  std::string weight_source(const LinearModule& module) const;
};

struct ModelLayout {
  std::optional<GptqQuantization> quantization;  // GPTQ checkpoint (from config.json)
  std::vector<DecoderLayerLayout> layers;
  std::vector<NamedShape> globals;  // embed_tokens, final norm, lm_head when untied
  bool tied_embeddings = false;
};

ModelLayout build_layout(const ModelConfig& config);

// The counts config.json announces, checked against the checkpoint before anything is built per
// layer or expert (a config with 2^40 layers must fail at once, not exhaust memory): the
// checkpoint must hold tensors of every layer, and the announced shapes must fit its bytes even
// at 2 bits per weight. Throws a bad-input Error naming config.json and the field.
void check_config_fits_checkpoint(const ModelConfig& config, const Checkpoint& checkpoint);

// Every tensor the layout expects, with its shape.
std::vector<NamedShape> expected_tensors(const ModelLayout& layout);

struct LayoutCheck {
  std::vector<std::string> warnings;           // things a user should know, already logged
  std::vector<std::string> unused_tensors;     // in the checkpoint but not part of the model
};

// Throws a bad-input Error naming the first missing tensor, wrong shape or bias mismatch.
// A missing lm_head.weight with tie_word_embeddings false makes the layout tied (with a warning).
// In a GPTQ checkpoint, modules stored as <name>.qweight are marked stored_packed (the others,
// left unquantized, keep <name>.weight).
LayoutCheck check_checkpoint(ModelLayout& layout, const Checkpoint& checkpoint);

}  // namespace sarqc

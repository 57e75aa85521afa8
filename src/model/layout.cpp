#include "sarqc/model/layout.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "sarqc/io/checkpoint.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

void add_linear(DecoderLayerLayout& layer, const std::string& prefix, const std::string& local,
                LinearRole role, int64_t in, int64_t out, bool bias, int expert = kNotExpert) {
  LinearModule m;
  m.local_name = local;
  m.name = prefix + local;
  m.role = role;
  m.in_features = in;
  m.out_features = out;
  m.has_bias = bias;
  m.expert = expert;
  // Routers and the shared-expert gate decide where tokens go; they stay in full precision.
  m.quantizable = role != LinearRole::Router && role != LinearRole::SharedExpertGate;
  layer.linears.push_back(m);
}

struct MlpNames {
  const char* gate;
  const char* up;
  const char* down;
};

void add_mlp(DecoderLayerLayout& layer, const std::string& prefix, const std::string& local,
             const MlpNames& names, int64_t hidden, int64_t width, bool bias, int expert) {
  add_linear(layer, prefix, local + "." + names.gate, LinearRole::Gate, hidden, width, bias, expert);
  add_linear(layer, prefix, local + "." + names.up, LinearRole::Up, hidden, width, bias, expert);
  add_linear(layer, prefix, local + "." + names.down, LinearRole::Down, width, hidden, bias, expert);
}

}  // namespace

std::string_view linear_role_name(LinearRole role) {
  switch (role) {
    case LinearRole::Q: return "q";
    case LinearRole::K: return "k";
    case LinearRole::V: return "v";
    case LinearRole::O: return "o";
    case LinearRole::Gate: return "gate";
    case LinearRole::Up: return "up";
    case LinearRole::Down: return "down";
    case LinearRole::Router: return "router";
    case LinearRole::SharedExpertGate: return "shared_expert_gate";
  }
  return "?";
}

bool LinearModule::packable(int bits) const {
  const int64_t multiple = bits == 3 ? 32 : 32 / bits;
  return quantizable && in_features % multiple == 0 && out_features % multiple == 0;
}

void check_config_fits_checkpoint(const ModelConfig& cfg, const Checkpoint& ckpt) {
  const std::string where = (ckpt.dir() / "config.json").string();
  const std::string prefix = "model.layers.";
  int64_t layers = 0;  // 1 + the highest layer index a tensor name carries
  for (const auto& name : ckpt.tensor_names()) {
    if (name.rfind(prefix, 0) != 0) continue;
    const size_t end = name.find('.', prefix.size());
    const std::string digits = name.substr(prefix.size(), end - prefix.size());
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
      continue;
    layers = std::max<int64_t>(layers, std::stoll(digits) + 1);
  }
  if (cfg.num_hidden_layers > layers)
    throw_bad_input(fmt::format("{}: num_hidden_layers is {}, but the checkpoint holds tensors "
                                "of {} layers",
                                where, cfg.num_hidden_layers, layers));
  // Parameters the shapes announce (in double: the counts may be absurd), against the bytes.
  const double d = static_cast<double>(cfg.hidden_size);
  const double attention = d * static_cast<double>(cfg.head_dim) *
                           (2.0 * static_cast<double>(cfg.num_attention_heads) +
                            2.0 * static_cast<double>(cfg.num_key_value_heads));
  double params = static_cast<double>(cfg.vocab_size) * d;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    params += attention;
    if (cfg.layer_is_moe(l))
      params += static_cast<double>(cfg.num_experts) *
                    (3.0 * d * static_cast<double>(cfg.expert_intermediate_size()) + d) +
                3.0 * d * static_cast<double>(cfg.shared_expert_intermediate_size);
    else
      params += 3.0 * d * static_cast<double>(cfg.intermediate_size);
  }
  const double bytes = static_cast<double>(ckpt.total_bytes());
  if (params / 4 > bytes)
    throw_bad_input(fmt::format("{}: the announced sizes (hidden_size {}, num_hidden_layers {}, "
                                "vocab_size {}{}) need {:.3g} weights, more than the "
                                "checkpoint's {:.0f} bytes hold even at 2 bits each",
                                where, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size,
                                cfg.is_moe() ? fmt::format(", num_experts {}", cfg.num_experts)
                                             : std::string(),
                                params, bytes));
}

ModelLayout build_layout(const ModelConfig& cfg) {
  ModelLayout layout;
  layout.quantization = cfg.quantization;
  layout.tied_embeddings = cfg.tie_word_embeddings;
  const int64_t d = cfg.hidden_size;
  const int64_t q_out = cfg.num_attention_heads * cfg.head_dim;
  const int64_t kv_out = cfg.num_key_value_heads * cfg.head_dim;
  const bool mixtral = cfg.family == ModelFamily::Mixtral;

  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    DecoderLayerLayout layer;
    layer.index = l;
    layer.moe = cfg.layer_is_moe(l);
    const std::string prefix = fmt::format("model.layers.{}.", l);
    layer.norms.push_back({prefix + "input_layernorm.weight", {d}});
    layer.norms.push_back({prefix + "post_attention_layernorm.weight", {d}});
    if (cfg.sandwich_norms) {
      layer.norms.push_back({prefix + "pre_feedforward_layernorm.weight", {d}});
      layer.norms.push_back({prefix + "post_feedforward_layernorm.weight", {d}});
    }
    if (cfg.qk_norm) {
      layer.norms.push_back({prefix + "self_attn.q_norm.weight", {cfg.head_dim}});
      layer.norms.push_back({prefix + "self_attn.k_norm.weight", {cfg.head_dim}});
    }
    add_linear(layer, prefix, "self_attn.q_proj", LinearRole::Q, d, q_out, cfg.qkv_bias);
    add_linear(layer, prefix, "self_attn.k_proj", LinearRole::K, d, kv_out, cfg.qkv_bias);
    add_linear(layer, prefix, "self_attn.v_proj", LinearRole::V, d, kv_out, cfg.qkv_bias);
    add_linear(layer, prefix, "self_attn.o_proj", LinearRole::O, q_out, d, cfg.o_bias);

    if (!layer.moe) {
      add_mlp(layer, prefix, "mlp", {"gate_proj", "up_proj", "down_proj"}, d,
              cfg.intermediate_size, cfg.mlp_bias, kNotExpert);
    } else if (mixtral) {
      add_linear(layer, prefix, "block_sparse_moe.gate", LinearRole::Router, d, cfg.num_experts,
                 false);
      for (int e = 0; e < cfg.num_experts; ++e)
        add_mlp(layer, prefix, fmt::format("block_sparse_moe.experts.{}", e), {"w1", "w3", "w2"},
                d, cfg.intermediate_size, false, e);
    } else {
      add_linear(layer, prefix, "mlp.gate", LinearRole::Router, d, cfg.num_experts, false);
      for (int e = 0; e < cfg.num_experts; ++e)
        add_mlp(layer, prefix, fmt::format("mlp.experts.{}", e),
                {"gate_proj", "up_proj", "down_proj"}, d, cfg.moe_intermediate_size, false, e);
      if (cfg.shared_expert_intermediate_size > 0) {
        add_mlp(layer, prefix, "mlp.shared_expert", {"gate_proj", "up_proj", "down_proj"}, d,
                cfg.shared_expert_intermediate_size, false, kSharedExpert);
        add_linear(layer, prefix, "mlp.shared_expert_gate", LinearRole::SharedExpertGate, d, 1,
                   false);
      }
    }
    layout.layers.push_back(std::move(layer));
  }
  layout.globals.push_back({"model.embed_tokens.weight", {cfg.vocab_size, d}});
  layout.globals.push_back({"model.norm.weight", {d}});
  if (!layout.tied_embeddings) layout.globals.push_back({"lm_head.weight", {cfg.vocab_size, d}});
  return layout;
}

std::string norm_local_name(const NamedShape& norm, int64_t layer) {
  const std::string prefix = fmt::format("model.layers.{}.", layer), suffix = ".weight";
  return norm.name.substr(prefix.size(), norm.name.size() - prefix.size() - suffix.size());
}

std::string DecoderLayerLayout::fused_gate_up_name() const {
  return fmt::format("model.layers.{}.mlp.experts.gate_up_proj", index);
}

std::string DecoderLayerLayout::fused_down_name() const {
  return fmt::format("model.layers.{}.mlp.experts.down_proj", index);
}

std::string DecoderLayerLayout::weight_source(const LinearModule& m) const {
  if (!fused_experts) return m.weight_name();
  if (m.expert >= 0) return m.role == LinearRole::Down ? fused_down_name() : fused_gate_up_name();
  if (m.role == LinearRole::Router) return fmt::format("model.layers.{}.mlp.gate.weight", index);
  return m.weight_name();
}

std::vector<NamedShape> expected_tensors(const ModelLayout& layout) {
  std::vector<NamedShape> out = layout.globals;
  for (const auto& layer : layout.layers) {
    for (const auto& norm : layer.norms) out.push_back(norm);
    int64_t experts = 0, width = 0, hidden = 0;
    for (const auto& m : layer.linears) {
      if (layer.fused_experts && m.expert >= 0) {
        experts = std::max<int64_t>(experts, m.expert + 1);
        if (m.role == LinearRole::Down) std::tie(hidden, width) = std::pair(m.out_features, m.in_features);
        continue;
      }
      if (m.stored_packed) {
        const int64_t b = layout.quantization->bits, g = layout.quantization->group_size;
        const int64_t G = g > 0 ? m.in_features / g : 1;
        out.push_back({m.name + ".qweight", {m.in_features * b / 32, m.out_features}});
        out.push_back({m.name + ".qzeros", {G, m.out_features * b / 32}});
        out.push_back({m.name + ".scales", {G, m.out_features}});
        out.push_back({m.name + ".g_idx", {m.in_features}});
      } else {
        out.push_back({layer.weight_source(m), {m.out_features, m.in_features}});
      }
      if (m.has_bias) out.push_back({m.bias_name(), {m.out_features}});
    }
    if (layer.fused_experts) {
      out.push_back({layer.fused_gate_up_name(), {experts, 2 * width, hidden}});
      out.push_back({layer.fused_down_name(), {experts, hidden, width}});
    }
  }
  return out;
}

LayoutCheck check_checkpoint(ModelLayout& layout, const Checkpoint& ckpt) {
  LayoutCheck check;
  auto warn = [&](std::string message) {
    spdlog::warn("{}", message);
    check.warnings.push_back(std::move(message));
  };
  const std::string where = ckpt.dir().string();
  if (!layout.tied_embeddings && !ckpt.contains("lm_head.weight")) {
    warn(fmt::format("{}: no lm_head.weight although tie_word_embeddings is false; using the "
                     "input embeddings as lm_head",
                     where));
    layout.tied_embeddings = true;
    layout.globals.erase(std::remove_if(layout.globals.begin(), layout.globals.end(),
                                        [](const NamedShape& t) { return t.name == "lm_head.weight"; }),
                         layout.globals.end());
  }

  if (layout.quantization)
    for (auto& layer : layout.layers)
      for (auto& m : layer.linears) m.stored_packed = ckpt.contains(m.name + ".qweight");

  // transformers >= 5 may save experts fused; the loader slices them per expert.
  for (auto& layer : layout.layers)
    layer.fused_experts = layer.moe && ckpt.contains(layer.fused_gate_up_name());

  std::set<std::string> expected_names;
  for (const auto& t : expected_tensors(layout)) {
    expected_names.insert(t.name);
    if (!ckpt.contains(t.name))
      throw_bad_input(fmt::format("{}: tensor '{}' {} is missing from the checkpoint", where,
                                  t.name, shape_text(t.shape)));
    const auto& shape = ckpt.info(t.name).shape;
    if (shape != t.shape)
      throw_bad_input(fmt::format("{}: tensor '{}' has shape {}, config.json implies {}", where,
                                  t.name, shape_text(shape), shape_text(t.shape)));
  }
  // A bias the config does not announce would be silently dropped: refuse it.
  for (const auto& layer : layout.layers)
    for (const auto& m : layer.linears)
      if (!m.has_bias && ckpt.contains(m.bias_name()))
        throw_bad_input(fmt::format("{}: tensor '{}' exists but config.json implies no bias for "
                                    "{} (check attention_bias / mlp_bias)",
                                    where, m.bias_name(), m.name));
  for (const auto& name : ckpt.tensor_names())
    if (expected_names.count(name) == 0) check.unused_tensors.push_back(name);
  if (!check.unused_tensors.empty())
    warn(fmt::format("{}: {} checkpoint tensor(s) are not part of the model and will be ignored "
                     "(first: '{}')",
                     where, check.unused_tensors.size(), check.unused_tensors.front()));
  return check;
}

}  // namespace sarqc

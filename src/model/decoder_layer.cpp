#include "sarqc/model/decoder_layer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/model/attention.h"
#include "sarqc/model/rms_norm.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

// Which layers of which models attend through a sliding window (docs/formats.md §9).
int64_t attention_window(const ModelConfig& cfg, int64_t layer, bool& unresolved) {
  unresolved = false;
  if (!cfg.sliding_window) return 0;
  // Qwen and Gemma 3 slide only on the layers their layer_types name.
  const bool per_layer = cfg.family == ModelFamily::Qwen2 || cfg.family == ModelFamily::Qwen3 ||
                         cfg.family == ModelFamily::Qwen2Moe ||
                         cfg.family == ModelFamily::Qwen3Moe ||
                         cfg.family == ModelFamily::Gemma3Text;
  if (!per_layer) return *cfg.sliding_window;
  if (cfg.layer_types.empty()) {
    unresolved = true;  // the max_window_layers rule changed between transformers versions
    return *cfg.sliding_window;
  }
  return cfg.layer_types[static_cast<size_t>(layer)] == "sliding_attention" ? *cfg.sliding_window
                                                                            : 0;
}

}  // namespace

DecoderLayer DecoderLayer::load(const ModelWeights& weights, int64_t index,
                                const ComputeOptions& options) {
  const ModelConfig& cfg = weights.config();
  TORCH_CHECK(index >= 0 && index < static_cast<int64_t>(weights.layout().layers.size()),
              "DecoderLayer::load: layer ", index, " out of range");
  DecoderLayer layer;
  layer.config_ = &cfg;
  layer.layout_ = &weights.layout().layers[static_cast<size_t>(index)];
  layer.options_ = options;
  for (const auto& m : layer.layout_->linears) {
    Linear lin;
    lin.module = &m;
    lin.weight = weights.linear_weight(*layer.layout_, m, options.device, options.dtype);
    lin.bias = weights.linear_bias(m, options.device, options.dtype);
    layer.linears_.emplace(m.local_name, std::move(lin));
  }
  for (const auto& norm : layer.layout_->norms)
    layer.norms_.emplace(norm_local_name(norm, index),
                         weights.tensor(norm.name, options.device, options.dtype));
  bool unresolved = false;
  layer.attention_window_ = attention_window(cfg, index, unresolved);
  if (unresolved) layer.attention_window_ = -*cfg.sliding_window;  // checked per call
  layer.local_rope_ = cfg.rope_local_theta > 0 && !cfg.layer_types.empty() &&
                      cfg.layer_types[static_cast<size_t>(index)] == "sliding_attention";
  return layer;
}

const DecoderLayer::Linear& DecoderLayer::linear(const std::string& local_name) const {
  auto it = linears_.find(local_name);
  TORCH_CHECK(it != linears_.end(), "layer ", layout_->index, " has no linear module '",
              local_name, "'");
  return it->second;
}

const at::Tensor& DecoderLayer::weight(const std::string& local_name) const {
  return linear(local_name).weight;
}

void DecoderLayer::set_weight(const std::string& local_name, const at::Tensor& weight) {
  Linear& lin = const_cast<Linear&>(linear(local_name));
  TORCH_CHECK(weight.sizes() == lin.weight.sizes(), "set_weight: '", local_name, "' must be [",
              lin.module->out_features, ", ", lin.module->in_features, "], got ", weight.sizes());
  lin.weight = weight.to(options_.device, options_.dtype);
}

at::Tensor DecoderLayer::bias(const std::string& local_name) const {
  const Linear& lin = linear(local_name);
  return lin.bias ? *lin.bias : at::Tensor();
}

void DecoderLayer::set_bias(const std::string& local_name, const at::Tensor& bias) {
  Linear& lin = const_cast<Linear&>(linear(local_name));
  TORCH_CHECK(lin.bias && bias.sizes() == lin.bias->sizes(), "set_bias: '", local_name,
              "' must have a bias of shape [", lin.module->out_features, "]");
  lin.bias = bias.to(options_.device, options_.dtype);
}

const at::Tensor& DecoderLayer::norm(const std::string& local_name) const {
  auto it = norms_.find(local_name);
  TORCH_CHECK(it != norms_.end(), "layer ", layout_->index, " has no norm '", local_name, "'");
  return it->second;
}

void DecoderLayer::divide_norm(const std::string& local_name, const at::Tensor& u) {
  const double offset = config_->norm_offset;
  const at::Tensor uu = u.to(norm(local_name).options());
  set_norm(local_name, offset == 0 ? norm(local_name) / uu : (norm(local_name) + offset) / uu - offset);
}

const char* DecoderLayer::mlp_input_norm() const {
  return config_->sandwich_norms ? "pre_feedforward_layernorm" : "post_attention_layernorm";
}

at::Tensor DecoderLayer::activate(const at::Tensor& gate) const {
  return config_->activation == Activation::GeluTanh ? at::gelu(gate, "tanh") : at::silu(gate);
}

at::Tensor DecoderLayer::normalize(const std::string& local_name, const at::Tensor& x) const {
  return rms_norm(x, norms_.at(local_name), config_->rms_norm_eps, config_->norm_offset);
}

void DecoderLayer::set_norm(const std::string& local_name, const at::Tensor& weight) {
  const at::Tensor& current = norm(local_name);
  TORCH_CHECK(weight.sizes() == current.sizes(), "set_norm: '", local_name, "' must be ",
              current.sizes(), ", got ", weight.sizes());
  norms_[local_name] = weight.to(options_.device, options_.dtype);
}

at::Tensor DecoderLayer::apply(const std::string& local_name, const at::Tensor& x,
                               LinearInputObserver* observer) const {
  const Linear& lin = linear(local_name);
  if (observer) observer->observe_input(*lin.module, x);
  return lin.bias ? at::linear(x, lin.weight, *lin.bias) : at::linear(x, lin.weight);
}

at::Tensor DecoderLayer::forward(const at::Tensor& hidden, const RotaryTables& rope,
                                 LinearInputObserver* observer) const {
  return mlp_block(attention_block(hidden, rope, observer), observer);
}

void DecoderLayer::check_hidden(const at::Tensor& hidden, const char* what) const {
  const int64_t d = config_->hidden_size;
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(2) == d, what, ": hidden must be [B, T, ", d,
              "], got ", hidden.sizes());
  TORCH_CHECK(hidden.scalar_type() == options_.dtype && hidden.device() == options_.device, what,
              ": hidden must be ", options_.dtype, " on ", options_.device, ", got ",
              hidden.scalar_type(), " on ", hidden.device());
}

at::Tensor DecoderLayer::attention_block(const at::Tensor& hidden, const RotaryTables& rope,
                                         LinearInputObserver* observer) const {
  return attention_residual(hidden, attention_heads(hidden, rope, observer), observer);
}

at::Tensor DecoderLayer::attention_heads(const at::Tensor& hidden, const RotaryTables& rope,
                                         LinearInputObserver* observer) const {
  check_hidden(hidden, "DecoderLayer::attention_heads");
  return attention(normalize("input_layernorm", hidden), rope, observer);
}

at::Tensor DecoderLayer::attention_residual(const at::Tensor& hidden, const at::Tensor& heads,
                                            LinearInputObserver* observer) const {
  check_hidden(hidden, "DecoderLayer::attention_residual");
  const ModelConfig& cfg = *config_;
  TORCH_CHECK(heads.dim() == 2 && heads.size(0) == hidden.size(0) * hidden.size(1) &&
                  heads.size(1) == cfg.num_attention_heads * cfg.head_dim,
              "DecoderLayer::attention_residual: heads must be [", hidden.size(0) * hidden.size(1),
              ", ", cfg.num_attention_heads * cfg.head_dim, "], got ", heads.sizes());
  const at::Tensor out = apply("self_attn.o_proj", heads, observer).view(hidden.sizes());
  return hidden + (cfg.sandwich_norms ? normalize("post_attention_layernorm", out) : out);
}

void DecoderLayer::observe(const std::string& local_name, const at::Tensor& x,
                           LinearInputObserver& observer) const {
  observer.observe_input(*linear(local_name).module, x);
}

void DecoderLayer::observe_attention_input(const at::Tensor& hidden,
                                           LinearInputObserver& observer) const {
  check_hidden(hidden, "DecoderLayer::observe_attention_input");
  const at::Tensor flat = normalize("input_layernorm", hidden).reshape({-1, config_->hidden_size});
  for (const char* name : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
    observe(name, flat, observer);
}

at::Tensor DecoderLayer::forward_cached(const at::Tensor& hidden, const RotaryTables& rope,
                                        KvCache& cache) const {
  check_hidden(hidden, "DecoderLayer::forward_cached");
  const at::Tensor normed = normalize("input_layernorm", hidden);
  return mlp_block(attention_residual(hidden, attention(normed, rope, nullptr, &cache)));
}

at::Tensor DecoderLayer::mlp_block(const at::Tensor& h, LinearInputObserver* observer) const {
  check_hidden(h, "DecoderLayer::mlp_block");
  if (!layout_->moe) return mlp_residual(h, mlp_hidden(h, observer), observer);
  const at::Tensor x = normalize(mlp_input_norm(), h).reshape({-1, config_->hidden_size});
  return h + moe(x, observer).view(h.sizes());
}

at::Tensor DecoderLayer::mlp_hidden(const at::Tensor& h, LinearInputObserver* observer) const {
  check_hidden(h, "DecoderLayer::mlp_hidden");
  TORCH_CHECK(!layout_->moe, "DecoderLayer::mlp_hidden: layer ", layout_->index,
              " is a mixture of experts");
  const at::Tensor x = normalize(mlp_input_norm(), h).reshape({-1, config_->hidden_size});
  return activate(apply("mlp.gate_proj", x, observer)) * apply("mlp.up_proj", x, observer);
}

at::Tensor DecoderLayer::mlp_residual(const at::Tensor& h, const at::Tensor& hidden_act,
                                      LinearInputObserver* observer) const {
  check_hidden(h, "DecoderLayer::mlp_residual");
  TORCH_CHECK(hidden_act.dim() == 2 && hidden_act.size(0) == h.size(0) * h.size(1),
              "DecoderLayer::mlp_residual: hidden_act must be [", h.size(0) * h.size(1),
              ", intermediate], got ", hidden_act.sizes());
  const at::Tensor out = apply("mlp.down_proj", hidden_act, observer).view(h.sizes());
  return h + (config_->sandwich_norms ? normalize("post_feedforward_layernorm", out) : out);
}

void DecoderLayer::observe_mlp_input(const at::Tensor& h, LinearInputObserver& observer) const {
  check_hidden(h, "DecoderLayer::observe_mlp_input");
  TORCH_CHECK(!layout_->moe, "DecoderLayer::observe_mlp_input: layer ", layout_->index,
              " is a mixture of experts");
  const at::Tensor x = normalize(mlp_input_norm(), h).reshape({-1, config_->hidden_size});
  observe("mlp.gate_proj", x, observer);
  observe("mlp.up_proj", x, observer);
}

at::Tensor DecoderLayer::attention(const at::Tensor& x, const RotaryTables& rope,
                                   LinearInputObserver* observer, KvCache* cache) const {
  const ModelConfig& cfg = *config_;
  const int64_t B = x.size(0), T = x.size(1), H = cfg.num_attention_heads,
                KV = cfg.num_key_value_heads, hd = cfg.head_dim;
  const int64_t past = cache ? cache->length() : 0;
  int64_t window = attention_window_;
  if (window < 0) {
    if (past + T > -window)
      throw_bad_input(fmt::format(
          "config.json: use_sliding_window is set without layer_types, and which qwen layers "
          "slide differs between transformers versions; sequences of {} tokens exceed "
          "sliding_window {} (use a shorter --seqlen)",
          past + T, -window));
    window = 0;
  }
  const at::Tensor flat = x.reshape({B * T, cfg.hidden_size});
  at::Tensor q = apply("self_attn.q_proj", flat, observer).view({B, T, H, hd});
  at::Tensor k = apply("self_attn.k_proj", flat, observer).view({B, T, KV, hd});
  at::Tensor v = apply("self_attn.v_proj", flat, observer).view({B, T, KV, hd});
  if (cfg.qk_norm) {
    q = normalize("self_attn.q_norm", q);
    k = normalize("self_attn.k_norm", k);
  }
  const RotaryTables local = local_rope_ ? rope.local() : RotaryTables{};
  const RotaryTables& tables = local_rope_ ? local : rope;
  TORCH_CHECK(tables.cos.defined(), "DecoderLayer::attention: layer ", layout_->index,
              " slides with the local rope, which the rotary tables lack");
  q = apply_rotary(q.transpose(1, 2), tables, past);
  k = apply_rotary(k.transpose(1, 2), tables, past);
  v = v.transpose(1, 2);
  if (cache) {
    if (past > 0) {
      k = at::cat({cache->k, k}, 2);
      v = at::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  const at::Tensor attended =
      causal_attention(q, k, v, window, options_.attention_chunk_bytes,
                       cfg.attention_scale);  // [B, H, T, hd]
  return attended.transpose(1, 2).reshape({B * T, H * hd});
}

at::Tensor DecoderLayer::mlp(const std::string& prefix, const at::Tensor& x,
                             LinearInputObserver* observer) const {
  // Expert modules are named w1/w3/w2 in mixtral and gate/up/down_proj elsewhere.
  const bool mixtral = prefix.find("block_sparse_moe.experts.") != std::string::npos;
  const at::Tensor gate = apply(prefix + (mixtral ? ".w1" : ".gate_proj"), x, observer);
  const at::Tensor up = apply(prefix + (mixtral ? ".w3" : ".up_proj"), x, observer);
  return apply(prefix + (mixtral ? ".w2" : ".down_proj"), activate(gate) * up, observer);
}

namespace {

// Forwards observe_input to observe_all_tokens_input of the wrapped observer.
class AllTokensAdapter : public LinearInputObserver {
 public:
  explicit AllTokensAdapter(LinearInputObserver& inner) : inner_(inner) {}
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    inner_.observe_all_tokens_input(m, x);
  }

 private:
  LinearInputObserver& inner_;
};

}  // namespace

at::Tensor DecoderLayer::moe(const at::Tensor& x, LinearInputObserver* observer) const {
  const ModelConfig& cfg = *config_;
  const bool mixtral = cfg.family == ModelFamily::Mixtral;
  const std::string block = mixtral ? "block_sparse_moe" : "mlp";
  const at::Tensor logits = apply(block + ".gate", x, observer);
  const MoeRouting routing = route_tokens(logits, cfg.num_experts_per_tok,
                                          mixtral || cfg.norm_topk_prob, x.scalar_type());
  if (observer) observer->observe_routing(*layout_, routing);
  if (observer && observer->wants_all_expert_tokens()) {
    AllTokensAdapter all(*observer);
    for (size_t e = 0; e < routing.experts.size(); ++e)
      mlp(fmt::format("{}.experts.{}", block, e), x, &all);  // statistics only
  }

  at::Tensor out = at::zeros_like(x);
  for (size_t e = 0; e < routing.experts.size(); ++e) {
    const ExpertTokens& routed = routing.experts[e];
    if (routed.tokens.numel() == 0) continue;
    const at::Tensor y = mlp(fmt::format("{}.experts.{}", block, e),
                             x.index_select(0, routed.tokens), observer);
    out.index_add_(0, routed.tokens, y * routed.weight.unsqueeze(1));
  }
  if (cfg.shared_expert_intermediate_size > 0) {
    const at::Tensor shared = mlp("mlp.shared_expert", x, observer);
    out = out + at::sigmoid(apply("mlp.shared_expert_gate", x, observer)) * shared;
  }
  return out;
}

}  // namespace sarqc

#pragma once
// One decoder layer on the compute device: its weights and its forward pass, for every supported
// architecture (dense SwiGLU MLP or a mixture of experts). The calibration pipeline watches the
// input of every linear through a LinearInputObserver and swaps weights as it quantizes.
#include <map>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "sarqc/model/compute.h"
#include "sarqc/model/layout.h"
#include "sarqc/model/moe.h"
#include "sarqc/model/rotary.h"

namespace sarqc {

class ModelWeights;

class LinearInputObserver {
 public:
  virtual ~LinearInputObserver() = default;
  // `input` [tokens, in_features] is what `module` is about to be applied to: every token of the
  // batch, or for a routed expert only the tokens routed to it.
  virtual void observe_input(const LinearModule& module, const at::Tensor& input) = 0;
  // Routing decisions of a MoE layer for the current batch (tokens flattened as [B·T]).
  virtual void observe_routing(const DecoderLayerLayout& /*layer*/, const MoeRouting& /*r*/) {}
  // When true, every routed expert is additionally run on all tokens of the batch (outputs
  // discarded) and its inputs reported to observe_all_tokens_input: calibration statistics for
  // experts that receive too few routed tokens.
  virtual bool wants_all_expert_tokens() const { return false; }
  virtual void observe_all_tokens_input(const LinearModule& /*module*/, const at::Tensor& /*x*/) {}
};

// Keys and values of the positions processed so far ([B, KV, T, hd] after rotary), for
// incremental decoding.
struct KvCache {
  at::Tensor k, v;
  int64_t length() const { return k.defined() ? k.size(2) : 0; }
};

class DecoderLayer {
 public:
  // Loads layer `index` of `weights` onto options.device as options.dtype.
  static DecoderLayer load(const ModelWeights& weights, int64_t index,
                           const ComputeOptions& options);

  const DecoderLayerLayout& layout() const { return *layout_; }

  // hidden: [B, T, d] in the compute dtype on the compute device; T <= the tables' length.
  // forward = mlp_block(attention_block(hidden)).
  at::Tensor forward(const at::Tensor& hidden, const RotaryTables& rope,
                     LinearInputObserver* observer = nullptr) const;
  // hidden + o_proj(attention(input_layernorm(hidden)))
  at::Tensor attention_block(const at::Tensor& hidden, const RotaryTables& rope,
                             LinearInputObserver* observer = nullptr) const;
  // h + mlp(post_attention_layernorm(h)), the MLP dense or a mixture of experts
  at::Tensor mlp_block(const at::Tensor& h, LinearInputObserver* observer = nullptr) const;
  // The stages of forward(), for callers that keep what is final (the calibration pipeline runs
  // each linear once per token). forward(h) = mlp_block(attention_residual(h, attention_heads(h))),
  // and on dense layers mlp_block(h) = mlp_residual(h, mlp_hidden(h)), with the same operations.
  // [B·T, H·hd]: q/k/v of input_layernorm(hidden), attended and merged (o_proj's input).
  at::Tensor attention_heads(const at::Tensor& hidden, const RotaryTables& rope,
                             LinearInputObserver* observer = nullptr) const;
  // hidden + o_proj(heads)
  at::Tensor attention_residual(const at::Tensor& hidden, const at::Tensor& heads,
                                LinearInputObserver* observer = nullptr) const;
  // Tells the observer q/k/v's input (input_layernorm(hidden) as [B·T, d]) without applying them.
  void observe_attention_input(const at::Tensor& hidden, LinearInputObserver& observer) const;
  // Dense layers only: act(gate(x))·up(x) [B·T, intermediate] with x = post_attention_layernorm(h)
  // (down_proj's input), and h + down_proj(that).
  at::Tensor mlp_hidden(const at::Tensor& h, LinearInputObserver* observer = nullptr) const;
  at::Tensor mlp_residual(const at::Tensor& h, const at::Tensor& hidden_act,
                          LinearInputObserver* observer = nullptr) const;
  // Dense layers only: tells the observer gate/up's input without applying them.
  void observe_mlp_input(const at::Tensor& h, LinearInputObserver& observer) const;
  // Tells the observer that module `local_name` is about to be applied to x.
  void observe(const std::string& local_name, const at::Tensor& x,
               LinearInputObserver& observer) const;
  // forward() of new positions that follow the cached ones; appends their keys and values.
  at::Tensor forward_cached(const at::Tensor& hidden, const RotaryTables& rope,
                            KvCache& cache) const;

  // Linear weights ([out, in]) by module local name ("self_attn.q_proj").
  const at::Tensor& weight(const std::string& local_name) const;
  void set_weight(const std::string& local_name, const at::Tensor& weight);
  // The module's bias (undefined when it has none), and a replacement of the same shape.
  at::Tensor bias(const std::string& local_name) const;
  void set_bias(const std::string& local_name, const at::Tensor& bias);
  // Norm weights by local name ("input_layernorm", "post_attention_layernorm", ...); scale
  // folding (AWQ) rewrites them.
  const at::Tensor& norm(const std::string& local_name) const;
  void set_norm(const std::string& local_name, const at::Tensor& weight);
  // Divides the norm's effective scale by u ((offset + w) / u − offset for Gemma's norms): the
  // fold of a scale u applied to the columns of the modules that read it.
  void divide_norm(const std::string& local_name, const at::Tensor& u);
  // The norm that gate/up (and a MoE layer's router) read: post_attention_layernorm, or Gemma's
  // pre_feedforward_layernorm.
  const char* mlp_input_norm() const;
  // The MLP's gate activation (SiLU, or Gemma's tanh GELU).
  at::Tensor activate(const at::Tensor& gate) const;
  const ModelConfig& config() const { return *config_; }

 private:
  struct Linear {
    const LinearModule* module = nullptr;
    at::Tensor weight;
    std::optional<at::Tensor> bias;
  };
  void check_hidden(const at::Tensor& hidden, const char* what) const;
  const Linear& linear(const std::string& local_name) const;
  at::Tensor apply(const std::string& local_name, const at::Tensor& x,
                   LinearInputObserver* observer) const;
  // x = input_layernorm(hidden): the merged heads [B·T, H·hd] before o_proj.
  at::Tensor attention(const at::Tensor& x, const RotaryTables& rope,
                       LinearInputObserver* observer, KvCache* cache = nullptr) const;

  at::Tensor mlp(const std::string& prefix, const at::Tensor& x,
                 LinearInputObserver* observer) const;
  at::Tensor moe(const at::Tensor& x, LinearInputObserver* observer) const;

  const ModelConfig* config_ = nullptr;
  const DecoderLayerLayout* layout_ = nullptr;
  ComputeOptions options_;
  std::map<std::string, Linear, std::less<>> linears_;
  std::map<std::string, at::Tensor, std::less<>> norms_;  // by local name, e.g. "input_layernorm"
  int64_t attention_window_ = 0;  // 0: full causal attention
  bool local_rope_ = false;       // Gemma 3's sliding layers use the local rope tables
  // rms_norm with this model's norm convention.
  at::Tensor normalize(const std::string& local_name, const at::Tensor& x) const;
};

}  // namespace sarqc

#include "sarqc/model/streaming_model.h"

#include "sarqc/util/interrupt.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "sarqc/model/rms_norm.h"

namespace sarqc {

StreamingModel::StreamingModel(const ModelWeights& weights, const ComputeOptions& options)
    : weights_(&weights), options_(options) {
  check_dtype_supported(options.device, options.dtype);
  embed_tokens_ = weights.embed_tokens(options.device, options.dtype);
}

const RotaryTables& StreamingModel::rotary(int64_t seqlen) const {
  if (!rotary_.cos.defined() || rotary_.cos.size(0) < seqlen)
    rotary_ = make_rotary_tables(weights_->config(), seqlen, options_.device, options_.dtype);
  return rotary_;
}

HiddenBatches StreamingModel::embed(const at::Tensor& ids, int64_t batch_tokens) const {
  TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong,
              "StreamingModel::embed: ids must be int64 [sequences, T], got ", ids.scalar_type(),
              " ", ids.sizes());
  const int64_t S = ids.size(0), T = ids.size(1), vocab = embed_tokens_.size(0);
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < vocab, "StreamingModel::embed: token ids must lie in [0, ", vocab,
                "), got [", lo, ", ", hi, "]");
  }
  const int64_t per_batch = std::max<int64_t>(1, batch_tokens / std::max<int64_t>(T, 1));
  const int64_t bytes = S * T * weights_->config().hidden_size * c10::elementSize(options_.dtype);
  HiddenBatches out;
  out.seqlen = T;
  out.storage = options_.device.is_cpu() || bytes <= options_.device_activation_budget
                    ? options_.device
                    : c10::Device(c10::kCPU);
  if (out.storage != options_.device)
    spdlog::info("activations ({:.1f} MiB) exceed the device budget; keeping them in host memory",
                 bytes / 1048576.0);
  for (int64_t s = 0; s < S; s += per_batch) {
    const at::Tensor chunk = ids.narrow(0, s, std::min(per_batch, S - s)).to(options_.device);
    at::Tensor h = embed_tokens_.index_select(0, chunk.reshape(-1))
                       .view({chunk.size(0), T, embed_tokens_.size(1)});
    // Gemma: times sqrt(hidden_size), rounded to the weights' dtype first (as transformers).
    const double scale = weights_->config().embed_scale;
    if (scale != 1.0) h = h * at::scalar_tensor(scale, at::kFloat).to(h.scalar_type());
    out.batches.push_back(h.to(out.storage));
  }
  return out;
}

void StreamingModel::advance(const DecoderLayer& layer, HiddenBatches& hidden) const {
  const RotaryTables& rope = rotary(hidden.seqlen);
  for (auto& batch : hidden.batches) {
    throw_if_interrupted();
    batch = layer.forward(batch.to(options_.device), rope).to(hidden.storage);
  }
}

void StreamingModel::run_layers(HiddenBatches& hidden,
                                const std::function<void(int64_t)>& on_layer) const {
  const int64_t L = weights_->config().num_hidden_layers;
  check_rope_seqlen(weights_->config(), hidden.seqlen, "sequence length");
  for (int64_t l = 0; l < L; ++l) {
    // Loaded layer by layer unless resident; the previous layer is freed when `owned` is replaced.
    DecoderLayer owned;
    const DecoderLayer* layer = nullptr;
    if (!resident_.empty()) {
      layer = &resident_[static_cast<size_t>(l)];
    } else {
      owned = DecoderLayer::load(*weights_, l, options_);
      layer = &owned;
    }
    advance(*layer, hidden);
    if (on_layer) on_layer(l);
  }
}

void StreamingModel::keep_layers_resident() {
  if (!resident_.empty()) return;
  for (int64_t l = 0; l < weights_->config().num_hidden_layers; ++l)
    resident_.push_back(DecoderLayer::load(*weights_, l, options_));
}

at::Tensor StreamingModel::logits(const at::Tensor& hidden) const {
  if (!lm_head_.defined()) {
    lm_head_ = weights_->layout().tied_embeddings
                   ? embed_tokens_
                   : weights_->lm_head(options_.device, options_.dtype);
    final_norm_ = weights_->final_norm(options_.device, options_.dtype);
  }
  const at::Tensor h = hidden.to(options_.device);
  const ModelConfig& c = weights_->config();
  return at::linear(rms_norm(h, final_norm_, c.rms_norm_eps, c.norm_offset), lm_head_)
      .to(at::kFloat);
}

at::Tensor StreamingModel::forward_cached(const at::Tensor& ids,
                                          std::vector<KvCache>& caches) const {
  TORCH_CHECK(!resident_.empty(), "forward_cached needs keep_layers_resident() first");
  caches.resize(resident_.size());
  const int64_t past = caches[0].length(), T = ids.size(1);
  check_rope_seqlen(weights_->config(), past + T, "sequence length");
  HiddenBatches hidden = embed(ids, ids.numel());
  at::Tensor h = hidden.batches.at(0).to(options_.device);
  const RotaryTables& rope = rotary(past + T);
  for (size_t l = 0; l < resident_.size(); ++l) h = resident_[l].forward_cached(h, rope, caches[l]);
  return logits(h);
}

at::Tensor StreamingModel::forward(const at::Tensor& ids) const {
  HiddenBatches hidden = embed(ids, ids.numel());
  run_layers(hidden);
  return logits(hidden.batches.at(0));
}

}  // namespace sarqc

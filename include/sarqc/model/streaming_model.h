#pragma once
// The whole model as a stream: embeddings -> decoder layers -> final norm -> lm_head, where
// run_layers() holds one decoder layer's weights on the compute device at a time and carries the
// hidden states of every sequence from layer to layer (on the device when they fit the budget,
// otherwise in host memory).
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/model/compute.h"
#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/rotary.h"
#include "sarqc/model/weights.h"

namespace sarqc {

// Hidden states of many sequences, in batches of [b, T, d].
struct HiddenBatches {
  std::vector<at::Tensor> batches;
  c10::Device storage{c10::kCPU};
  int64_t seqlen = 0;
};

class StreamingModel {
 public:
  // `weights` must outlive the model.
  StreamingModel(const ModelWeights& weights, const ComputeOptions& options);

  const ModelWeights& weights() const { return *weights_; }
  const ComputeOptions& options() const { return options_; }

  // ids: [S, T] int64. Splits the sequences into batches of at most `batch_tokens` tokens (at
  // least one sequence each) and embeds them.
  HiddenBatches embed(const at::Tensor& ids, int64_t batch_tokens = 8192) const;

  // Runs every decoder layer over all batches. `on_layer` (may be empty) is told each finished
  // layer, for progress reporting.
  void run_layers(HiddenBatches& hidden,
                  const std::function<void(int64_t layer)>& on_layer = {}) const;

  // Replaces every batch by `layer`'s output (computed on the device, stored back where the
  // batches live).
  void advance(const DecoderLayer& layer, HiddenBatches& hidden) const;

  // Loads every layer once and keeps it: for generation and for small models.
  void keep_layers_resident();

  // Final norm and lm_head: hidden [..., d] -> fp32 logits [..., vocab] on the compute device.
  at::Tensor logits(const at::Tensor& hidden) const;

  // All-at-once forward of one batch of ids [B, T] -> fp32 logits [B, T, vocab].
  at::Tensor forward(const at::Tensor& ids) const;

  // Incremental decoding with resident layers: ids [B, t] follow the positions already in
  // `caches` (one per layer; empty to start). Returns fp32 logits [B, t, vocab].
  at::Tensor forward_cached(const at::Tensor& ids, std::vector<KvCache>& caches) const;

  const RotaryTables& rotary(int64_t seqlen) const;

 private:
  const ModelWeights* weights_;
  ComputeOptions options_;
  at::Tensor embed_tokens_;
  mutable at::Tensor lm_head_, final_norm_;  // loaded by the first logits() (quantize needs none)
  std::vector<DecoderLayer> resident_;
  mutable RotaryTables rotary_;
};

}  // namespace sarqc

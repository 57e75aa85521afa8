#pragma once
// One activation stream (X_q, or X_f) through one decoder layer, computed stage by stage so that
// every linear runs once per token, however many true-sequential groups observe the layer
// (docs/methods.md §7). What is final is kept: after [q,k,v] are quantized the merged attention
// heads (o_proj's input), after [o] the residual h (the MLP's input), after [gate,up] the MLP's
// hidden activations (down_proj's input). Without this each group re-ran the layer up to itself.
#include <cstddef>
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/streaming_model.h"

namespace sarqc {

class LayerStages {
 public:
  // `layer` (whose weights change group by group as they are quantized) and `stream` must
  // outlive this object. The stream's batches are computed on `device` and kept where the
  // stream keeps them. cache_mlp_hidden keeps down_proj's input between its observation and
  // finish() (dense layers; else it is computed again there).
  LayerStages(const DecoderLayer& layer, HiddenBatches& stream, const RotaryTables& rope,
              c10::Device device, bool cache_mlp_hidden);

  size_t batches() const { return stream_->batches.size(); }
  int64_t sequences(size_t batch) const;
  int64_t sequence_length(size_t batch) const;

  // Tells `observer` batch `batch`'s inputs of the modules of `group` (sequential_group). Group
  // k's inputs are computed with the weights the groups before k have by then; a group may not
  // be observed after a later one.
  void observe(int group, size_t batch, LinearInputObserver& observer);

  // Replaces every batch of the stream by the layer's output.
  void finish();

  // Bytes kept per token beyond the stream itself, at most (for the memory estimate).
  static int64_t extra_bytes_per_token(const ModelConfig& config, bool moe, bool cache_mlp_hidden,
                                       int64_t element_size);

 private:
  struct State {
    int stage = 0;       // 0: x; 1: x, heads; 2: h; 3: h, mlp hidden; 4: the output
    int observed = -1;   // the last group observed
    at::Tensor heads;    // [B·T, H·hd]
    at::Tensor mlp;      // [B·T, intermediate]
  };
  at::Tensor on_device(const at::Tensor& t) const { return t.to(device_); }
  at::Tensor stored(const at::Tensor& t) const { return t.to(stream_->storage); }
  void reach(int stage, size_t batch);

  const DecoderLayer* layer_;
  HiddenBatches* stream_;
  const RotaryTables* rope_;
  c10::Device device_;
  bool cache_mlp_hidden_;
  std::vector<State> state_;
};

}  // namespace sarqc

#include "sarqc/calib/layer_stages.h"

#include <ATen/ATen.h>

#include "sarqc/util/fault_point.h"
#include "sarqc/util/interrupt.h"

namespace sarqc {

LayerStages::LayerStages(const DecoderLayer& layer, HiddenBatches& stream,
                         const RotaryTables& rope, c10::Device device, bool cache_mlp_hidden)
    : layer_(&layer),
      stream_(&stream),
      rope_(&rope),
      device_(device),
      cache_mlp_hidden_(cache_mlp_hidden && !layer.layout().moe),
      state_(stream.batches.size()) {}

int64_t LayerStages::sequences(size_t batch) const {
  return stream_->batches.at(batch).size(0);
}

int64_t LayerStages::sequence_length(size_t batch) const {
  return stream_->batches.at(batch).size(1);
}

int64_t LayerStages::extra_bytes_per_token(const ModelConfig& cfg, bool moe,
                                           bool cache_mlp_hidden, int64_t element_size) {
  const int64_t heads = cfg.num_attention_heads * cfg.head_dim;
  const int64_t mlp = !moe && cache_mlp_hidden ? cfg.intermediate_size : 0;
  // stage 1 keeps x and the heads; stage 3 keeps h and the MLP's hidden activations
  return std::max(heads, mlp) * element_size;
}

// Stage 1 computes the heads with the current q/k/v, stage 2 h with the current o_proj (x and
// the heads are then dropped), stage 3 the MLP's hidden activations with the current gate/up.
void LayerStages::reach(int stage, size_t b) {
  State& s = state_[b];
  at::Tensor& batch = stream_->batches[b];
  if (s.stage < 1 && stage >= 1) {
    s.heads = stored(layer_->attention_heads(on_device(batch), *rope_));
    s.stage = 1;
  }
  if (s.stage < 2 && stage >= 2) {
    batch = stored(layer_->attention_residual(on_device(batch), on_device(s.heads)));
    s.heads = at::Tensor();
    s.stage = 2;
  }
  if (s.stage < 3 && stage >= 3 && cache_mlp_hidden_) {
    s.mlp = stored(layer_->mlp_hidden(on_device(batch)));
    s.stage = 3;
  }
}

void LayerStages::observe(int group, size_t b, LinearInputObserver& observer) {
  TORCH_CHECK(group >= 0 && group <= 3, "LayerStages::observe: no group ", group);
  State& s = state_.at(b);
  const bool moe = layer_->layout().moe;
  TORCH_CHECK(group >= s.observed && s.stage < 4, "LayerStages::observe: group ", group,
              " observed after group ", s.observed, " or after finish()");
  s.observed = group;
  switch (group) {
    case 0:
      layer_->observe_attention_input(on_device(stream_->batches[b]), observer);
      return;
    case 1:
      reach(1, b);
      layer_->observe("self_attn.o_proj", on_device(s.heads), observer);
      return;
    default:
      reach(2, b);
      if (moe) {  // routing decides which tokens each expert sees: run the whole block
        layer_->mlp_block(on_device(stream_->batches[b]), &observer);
      } else if (group == 2) {
        layer_->observe_mlp_input(on_device(stream_->batches[b]), observer);
      } else {
        at::Tensor hidden;
        if (cache_mlp_hidden_) {
          reach(3, b);
          hidden = on_device(s.mlp);
        } else {
          hidden = layer_->mlp_hidden(on_device(stream_->batches[b]));
        }
        layer_->observe("mlp.down_proj", hidden, observer);
      }
  }
}

void LayerStages::finish() {
  const bool moe = layer_->layout().moe;
  for (size_t b = 0; b < state_.size(); ++b) {
    throw_if_interrupted();
    fault_point("forward");
    reach(2, b);
    State& s = state_[b];
    at::Tensor& batch = stream_->batches[b];
    const at::Tensor h = on_device(batch);
    if (moe) {
      batch = stored(layer_->mlp_block(h));
    } else {
      const at::Tensor hidden = s.stage == 3 ? on_device(s.mlp) : layer_->mlp_hidden(h);
      batch = stored(layer_->mlp_residual(h, hidden));
    }
    s = State{};
    s.stage = 4;
  }
}

}  // namespace sarqc

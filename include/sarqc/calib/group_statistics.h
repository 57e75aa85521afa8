#pragma once
// The calibration statistics of one true-sequential group of one layer (docs/methods.md §1, §7,
// §8): a Gram matrix per distinct module input (q/k/v share one, gate/up of one MLP share one),
// with the cross-Gram D when the objective pairs the quantized stream X_q with the full-precision
// stream X_f, and for routed experts under the all-tokens policy a second Gram over every token.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/calib/gram.h"
#include "sarqc/calib/holdout_split.h"
#include "sarqc/calib/layer_stages.h"
#include "sarqc/model/decoder_layer.h"

namespace sarqc {

class GroupStatistics {
 public:
  GroupStatistics(int group, c10::Device device) : group_(group), device_(device) {}

  int group() const { return group_; }
  // The Gram of the input `key` (input_key), or null when no batch reached it.
  const GramAccumulator* find(const std::string& key) const;
  // Keys of a routed expert's Gram over all tokens of the layer (the all-tokens policy), and of a
  // Gram's held-out folds (0 and 1) under a HoldoutSplit: find(all_tokens_key(key)) etc.
  static std::string all_tokens_key(const std::string& key);
  static std::string fold_key(const std::string& key, int fold);

  // Seconds spent accumulating (the rest of a capture is the forward passes).
  double seconds() const { return seconds_; }

  // Every Gram summed over the ranks (GramAccumulator::reduce), in key order. A rank may lack
  // keys that others have (a routed expert no token of its batches reached): every key that
  // the group's `members` can feed under `settings` is reduced on every rank, and those no rank
  // saw are dropped again, as in one process. `folds`: the fold Grams of a HoldoutSplit too.
  void reduce(const std::function<void(at::Tensor&)>& sum,
              const std::vector<const LinearModule*>& members, bool all_expert_tokens,
              bool folds = false);

  // Used while capturing:
  GramAccumulator& gram(const std::string& key, int64_t features);
  void add_seconds(double s) { seconds_ += s; }

 private:
  int group_;
  c10::Device device_;
  std::map<std::string, GramAccumulator> grams_;
  double seconds_ = 0;
};

struct CaptureSettings {
  bool all_expert_tokens = false;  // the all-tokens MoE policy (groups 2 and 3)
  // α_j per sequence of a batch for the paired capture (X_f's share of the target).
  std::function<std::vector<float>(int64_t sequences)> alpha;
  // With a split, every Gram also gets its two folds (GroupStatistics::fold_key); the batches
  // of `q` are the windows from `first_window` on, in order.
  const HoldoutSplit* split = nullptr;
  int64_t first_window = 0;
};

// Accumulates the group's statistics over every batch of the quantized stream `q`, or, with
// `fp` (and the layer holding the full-precision weights), paired with X_f token by token.
GroupStatistics capture_group_statistics(int group, LayerStages& q, LayerStages* fp,
                                         const DecoderLayer* fp_layer,
                                         const CaptureSettings& settings, c10::Device device);

}  // namespace sarqc

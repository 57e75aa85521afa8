#include "sarqc/calib/group_statistics.h"

#include <ATen/ATen.h>

#include <array>

#include "sarqc/calib/module_groups.h"
#include "sarqc/util/interrupt.h"
#include "sarqc/util/stopwatch.h"

namespace sarqc {
namespace {

constexpr const char* kAllTokensSuffix = "#all-tokens";

// A batch's held-out split: the fold of each of its rows, and each fold's pieces (its share of N).
struct BatchFolds {
  at::Tensor rows;  // bool [tokens of the batch], true: fold 1; undefined without a split
  std::array<int64_t, 2> pieces{0, 0};
};

// Adds the rows of x (and x_fp, weight) to the key's two fold accumulators. `rows` is the fold
// of each of x's rows.
void add_to_folds(GroupStatistics& stats, const std::string& key, int64_t features,
                  const BatchFolds& folds, const at::Tensor& rows, const at::Tensor& x,
                  const at::Tensor* x_fp = nullptr, const at::Tensor* weight = nullptr) {
  if (!folds.rows.defined()) return;
  for (int f = 0; f < 2; ++f) {
    const int64_t pieces = folds.pieces[static_cast<size_t>(f)];
    if (pieces == 0) continue;
    const at::Tensor index = (f == 1 ? rows : rows.logical_not()).nonzero().reshape({-1});
    GramAccumulator& gram = stats.gram(GroupStatistics::fold_key(key, f), features);
    if (x_fp)
      gram.add(x.index_select(0, index), x_fp->index_select(0, index),
               weight->index_select(0, index), pieces);
    else
      gram.add(x.index_select(0, index), pieces);
  }
}

BatchFolds batch_folds(const CaptureSettings& settings, int64_t first_window, int64_t sequences,
                       c10::Device device) {
  BatchFolds folds;
  if (!settings.split || !settings.split->enabled()) return folds;
  folds.rows = settings.split->row_folds(first_window, sequences, device);
  folds.pieces = settings.split->pieces(first_window, sequences);
  return folds;
}

// Accumulates the inputs of one group's modules from the quantized stream alone.
class GramObserver : public LinearInputObserver {
 public:
  GramObserver(GroupStatistics& stats, int64_t sequences, bool all_expert_tokens,
               const BatchFolds& folds)
      : stats_(stats), sequences_(sequences), all_(all_expert_tokens), folds_(folds) {}
  void observe_routing(const DecoderLayerLayout&, const MoeRouting& r) override { routing_ = r; }
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    // Routed experts see a subset of the batch's tokens; every sequence still counts toward N
    // (the normaliser stays 2/N, docs/methods.md §8).
    if (sequential_group(m) == stats_.group() && feeds_key(m)) {
      const Stopwatch clock;
      stats_.gram(input_key(m), m.in_features).add(x, sequences_);
      if (folds_.rows.defined()) {
        const at::Tensor rows =
            m.expert < 0 ? folds_.rows
                         : folds_.rows.index_select(
                               0, routing_.experts.at(static_cast<size_t>(m.expert)).tokens);
        add_to_folds(stats_, input_key(m), m.in_features, folds_, rows, x);
      }
      stats_.add_seconds(clock.seconds());
    }
  }
  bool wants_all_expert_tokens() const override { return all_ && stats_.group() >= 2; }
  void observe_all_tokens_input(const LinearModule& m, const at::Tensor& x) override {
    if (sequential_group(m) == stats_.group() && feeds_key(m) && m.expert >= 0) {
      const Stopwatch clock;
      stats_.gram(input_key(m) + kAllTokensSuffix, m.in_features).add(x, sequences_);
      add_to_folds(stats_, input_key(m) + kAllTokensSuffix, m.in_features, folds_, folds_.rows,
                   x);
      stats_.add_seconds(clock.seconds());
    }
  }

 private:
  GroupStatistics& stats_;
  int64_t sequences_;
  bool all_;
  const BatchFolds& folds_;
  MoeRouting routing_;
};

// Keeps the inputs of one group's modules for one batch (paired capture of both streams), and
// in MoE layers the router's input and decisions.
class RecordingObserver : public LinearInputObserver {
 public:
  RecordingObserver(int group, bool all_expert_tokens) : group_(group), all_(all_expert_tokens) {}
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    if (m.role == LinearRole::Router) router_input = x;
    if (sequential_group(m) == group_ && feeds_key(m)) inputs[input_key(m)] = {&m, x};
  }
  void observe_routing(const DecoderLayerLayout&, const MoeRouting& r) override { routing = r; }
  bool wants_all_expert_tokens() const override { return all_ && group_ >= 2; }
  void observe_all_tokens_input(const LinearModule& m, const at::Tensor& x) override {
    if (sequential_group(m) == group_ && feeds_key(m) && m.expert >= 0)
      all_tokens_inputs[input_key(m)] = {&m, x};
  }
  std::map<std::string, std::pair<const LinearModule*, at::Tensor>> inputs;
  // Routed experts run on every token of the batch (the all-tokens policy), by key.
  std::map<std::string, std::pair<const LinearModule*, at::Tensor>> all_tokens_inputs;
  at::Tensor router_input;  // [tokens, hidden]: the post-attention norm's output
  MoeRouting routing;

 private:
  int group_;
  bool all_;
};

// A routed expert's FP-stream input at the given tokens (docs/methods.md §8): the FP post-attention
// norm output for gate/up, and act(gate_e(x_f))·up_e(x_f) with the FP expert for down, whether
// or not the FP router chose the expert there.
at::Tensor expert_fp_input(const DecoderLayer& fp_layer, const LinearModule& m,
                           const at::Tensor& fp_router_input) {
  if (m.role != LinearRole::Down) return fp_router_input;
  const std::string parent = parent_of(m.local_name);
  std::string gate, up;
  for (const auto& other : fp_layer.layout().linears) {
    if (parent_of(other.local_name) != parent) continue;
    if (other.role == LinearRole::Gate) gate = other.local_name;
    if (other.role == LinearRole::Up) up = other.local_name;
  }
  auto apply = [&](const std::string& name) {
    return at::linear(fp_router_input, fp_layer.weight(name), fp_layer.bias(name));
  };
  return fp_layer.activate(apply(gate)) * apply(up);
}

}  // namespace

const GramAccumulator* GroupStatistics::find(const std::string& key) const {
  const auto it = grams_.find(key);
  return it == grams_.end() ? nullptr : &it->second;
}

std::string GroupStatistics::all_tokens_key(const std::string& key) {
  return key + kAllTokensSuffix;
}

std::string GroupStatistics::fold_key(const std::string& key, int fold) {
  return key + "#fold" + std::to_string(fold);
}

GramAccumulator& GroupStatistics::gram(const std::string& key, int64_t features) {
  auto it = grams_.find(key);
  if (it == grams_.end()) it = grams_.emplace(key, GramAccumulator(features, device_)).first;
  return it->second;
}

void GroupStatistics::reduce(const std::function<void(at::Tensor&)>& sum,
                             const std::vector<const LinearModule*>& members,
                             bool all_expert_tokens, bool folds) {
  std::map<std::string, int64_t> keys;
  auto want = [&](const std::string& key, int64_t features) {
    keys[key] = features;
    if (folds)
      for (int f = 0; f < 2; ++f) keys[fold_key(key, f)] = features;
  };
  for (const LinearModule* m : members) {
    if (sequential_group(*m) != group_ || !feeds_key(*m)) continue;
    want(input_key(*m), m->in_features);
    if (all_expert_tokens && group_ >= 2 && m->expert >= 0)
      want(all_tokens_key(input_key(*m)), m->in_features);
  }
  for (const auto& [key, gram] : grams_)
    TORCH_CHECK(keys.count(key), "GroupStatistics::reduce: statistics of '", key,
                "' are not among the group's inputs");
  for (const auto& [key, features] : keys) gram(key, features);
  for (auto& [key, g] : grams_) g.reduce(sum);
  for (auto it = grams_.begin(); it != grams_.end();)
    it = it->second.sequences() == 0 ? grams_.erase(it) : std::next(it);
}

GroupStatistics capture_group_statistics(int group, LayerStages& q, LayerStages* fp,
                                         const DecoderLayer* fp_layer,
                                         const CaptureSettings& settings, c10::Device device) {
  GroupStatistics stats(group, device);
  TORCH_CHECK(!fp || (fp_layer && fp->batches() == q.batches()),
              "capture_group_statistics: the FP stream needs its layer and the same batches");
  int64_t window = settings.first_window;  // the batch's first, in the whole calibration
  for (size_t b = 0; b < q.batches(); ++b) {
    throw_if_interrupted();
    const int64_t sequences = q.sequences(b);
    const BatchFolds folds = batch_folds(settings, window, sequences, device);
    window += sequences;
    if (!fp) {
      GramObserver observer(stats, sequences, settings.all_expert_tokens, folds);
      q.observe(group, b, observer);
      continue;
    }
    // Both streams through their layer up to this group, then X_q, X_f and α per token.
    RecordingObserver q_inputs(group, settings.all_expert_tokens), fp_inputs(group, false);
    q.observe(group, b, q_inputs);
    fp->observe(group, b, fp_inputs);
    const Stopwatch clock;
    std::vector<float> alpha(static_cast<size_t>(sequences), 1.0f);
    if (settings.alpha) alpha = settings.alpha(sequences);
    const int64_t T = q.sequence_length(b);
    // α_j per sequence, copied to the device once (not element by element).
    const at::Tensor weight = at::tensor(alpha).to(device).repeat_interleave(T);
    for (const auto& [key, input] : q_inputs.inputs) {
      const LinearModule& m = *input.first;
      GramAccumulator& gram = stats.gram(key, m.in_features);
      if (m.expert < 0) {
        const at::Tensor& x_fp = fp_inputs.inputs.at(key).second;
        gram.add(input.second, x_fp, weight, sequences);
        add_to_folds(stats, key, m.in_features, folds, folds.rows, input.second, &x_fp, &weight);
      } else {
        // Routed tokens: the quantized router's choice, paired with the FP stream there.
        const at::Tensor& tokens = q_inputs.routing.experts.at(static_cast<size_t>(m.expert)).tokens;
        const at::Tensor x_fp =
            expert_fp_input(*fp_layer, m, fp_inputs.router_input.index_select(0, tokens));
        const at::Tensor routed_weight = weight.index_select(0, tokens);
        gram.add(input.second, x_fp, routed_weight, sequences);
        if (folds.rows.defined())
          add_to_folds(stats, key, m.in_features, folds, folds.rows.index_select(0, tokens),
                       input.second, &x_fp, &routed_weight);
      }
    }
    for (const auto& [key, input] : q_inputs.all_tokens_inputs) {
      const at::Tensor x_fp = expert_fp_input(*fp_layer, *input.first, fp_inputs.router_input);
      stats.gram(GroupStatistics::all_tokens_key(key), input.first->in_features)
          .add(input.second, x_fp, weight, sequences);
      add_to_folds(stats, GroupStatistics::all_tokens_key(key), input.first->in_features, folds,
                   folds.rows, input.second, &x_fp, &weight);
    }
    stats.add_seconds(clock.seconds());
  }
  return stats;
}

}  // namespace sarqc

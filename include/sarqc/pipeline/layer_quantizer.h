#pragma once
// The layer loop's body (sarqc quantize, one layer at a time): load the layer, (scale search),
// per true-sequential group the statistics, each module rounded, shared between the ranks and
// written, then the calibration streams advanced through the quantized layer. run_quantize
// (quantize.cpp) owns the run around it: work folder, resume, report.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "sarqc/calib/calibration_set.h"
#include "sarqc/calib/holdout_split.h"
#include "sarqc/dist/world.h"
#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/rotary.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/objective/interp.h"
#include "sarqc/pipeline/checkpoint_writer.h"
#include "sarqc/pipeline/module_quantizer.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/util/progress.h"

namespace sarqc {

// Whether LayerStages may keep down_proj's inputs of every calibration token.
bool mlp_cache_fits(const QuantizeOptions& o, const ModelConfig& cfg, int64_t tokens);

// How the calibration windows are split between the ranks: whole batches of the calibration's
// own batching (calibration_batches), contiguous, the first ranks one batch more.
struct WindowShares {
  int64_t windows = 0;
  CalibrationBatches split;
  int ranks = 1;
  int64_t first(int rank) const {
    const int64_t share = split.batches / ranks, extra = split.batches % ranks;
    return std::min(windows, (rank * share + std::min<int64_t>(rank, extra)) * split.per_batch);
  }
  int64_t end(int rank) const { return rank + 1 >= ranks ? windows : first(rank + 1); }
  int64_t count(int rank) const { return end(rank) - first(rank); }
};

// Everything carried from one layer to the next: a run that stopped after layer l - 1 continues
// from exactly this (resume), and processes that split the calibration windows exchange only
// this (multi-process runs).
struct LayerLoopState {
  int64_t next_layer = 0;
  HiddenBatches stream;        // X_q: the windows through the quantized layers so far
  HiddenBatches fp_stream;     // X_f through the original layers (when the plan keeps it)
  bool any_reordered = false;  // a module was written in act-order (desc_act)
  std::string fingerprint;     // of the model, the settings and the calibration windows
};

// One layer at a time: load, (scale search), per true-sequential group the statistics, each
// module rounded and written, then the streams advanced through the quantized layer.
class LayerQuantizer {
 public:
  // writer: null on the ranks other than 0, which compute but do not write. This rank holds
  // windows [shares.first(rank), shares.end(rank)) of the calibration.
  LayerQuantizer(const QuantizeOptions& o, const QuantizePlan& plan, const ModelWeights& weights,
                 QuantizedCheckpointWriter* writer, QuantizeReport& report, ProgressBar& bar,
                 int64_t starved_below, int64_t seqlen, World& world, const WindowShares& shares)
      : o_(o),
        plan_(plan),
        weights_(weights),
        writer_(writer),
        world_(world),
        shares_(shares),
        report_(report),
        bar_(bar),
        modules_(plan, o, starved_below),
        alpha_sampler_(o.seed, plan.objective_settings.mixup) {
    if (plan.needs_data)
      rope_ = make_rotary_tables(weights.config(), seqlen, o.compute.device, o.compute.dtype);
  }

  void run(LayerLoopState& state);
  std::string alpha_state() const { return alpha_sampler_.state(); }
  void restore_alpha_state(const std::string& state) { alpha_sampler_.restore(state); }

 private:
  void search_scales_of(DecoderLayer& master, DecoderLayer* fp_layer, const LayerLoopState& state,
                        int64_t l);
  std::vector<at::Tensor> gather_search_windows(const HiddenBatches& stream) const;
  void share_result(int owner, const LinearModule& m, std::optional<QuantizedModule>& done,
                    ModuleRecord& rec);

  const QuantizeOptions& o_;
  const QuantizePlan& plan_;
  const ModelWeights& weights_;
  QuantizedCheckpointWriter* writer_;
  World& world_;
  WindowShares shares_;
  QuantizeReport& report_;
  ProgressBar& bar_;
  ModuleQuantizer modules_;
  HoldoutSplit split_;  // --lambda auto's folds of the windows, made at the first layer
  AlphaSampler alpha_sampler_;
  RotaryTables rope_;
};

}  // namespace sarqc

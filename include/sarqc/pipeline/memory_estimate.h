#pragma once
// The memory `sarqc quantize` needs beyond the memory-mapped checkpoint, phase by phase; the one
// estimate `inspect` and `quantize` both print. On the CPU it is anonymous host memory; on CUDA
// the layer, Grams, rounding and forward terms are device memory.
#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

#include "sarqc/io/hf_config.h"
#include "sarqc/model/layout.h"

namespace sarqc {

struct QuantizeMemoryInputs {
  int64_t tokens = 0;                  // calibration tokens (nsamples × seqlen); 0: none
  c10::ScalarType compute_dtype = c10::ScalarType::Float;
  bool calibrate = true;               // Gram matrices are accumulated
  bool keep_fp_stream = false;         // X_f and the FP layer copy
  bool paired_capture = false;         // a cross-Gram D next to each Gram
  bool holdout_folds = false;          // two more of each (--lambda auto's folds)
  bool cache_mlp_hidden = true;        // LayerStages keeps down_proj's input
  int64_t batch_tokens = 8192;         // tokens per forward batch
  int64_t beam_budget_bytes = 0;       // successive/beam decoder state (0: gptq/rtn)
};

struct QuantizeMemoryEstimate {
  int64_t embedding_bytes = 0;  // embed_tokens while the windows are embedded (then freed)
  int64_t layer_bytes = 0;      // the largest layer: compute copy, fp32 master, FP copy
  int64_t gram_bytes = 0;       // the Grams (and D) of the largest true-sequential group
  int64_t rounding_bytes = 0;   // the largest module's rounding working set
  int64_t stream_bytes = 0;     // the activation stream(s) and their stage caches
  int64_t forward_bytes = 0;    // one batch's intermediate activations
  int64_t peak_bytes = 0;       // max of the embedding phase and the layer phase

  std::string describe() const;  // one line, MiB
};

QuantizeMemoryEstimate estimate_quantize_memory(const ModelConfig& config,
                                                const ModelLayout& layout,
                                                const QuantizeMemoryInputs& inputs);

}  // namespace sarqc

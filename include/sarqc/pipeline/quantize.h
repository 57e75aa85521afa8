#pragma once
// `sarqc quantize` as one library call (docs/methods.md §7): calibration windows streamed through
// the model layer by layer; per true-sequential group of linears a Gram matrix, an objective and a
// rounding backend; the quantized layer produces the next layer's inputs; the result is written as
// a GPTQ checkpoint (docs/formats.md) into a temporary folder renamed at the end.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "sarqc/model/compute.h"
#include "sarqc/pipeline/plan.h"
#include "sarqc/pipeline/report.h"
#include "sarqc/objective/objective.h"
#include "sarqc/quant/grid.h"
#include "sarqc/rounding/rounder.h"
#include "sarqc/rounding/scale_search.h"

namespace sarqc {

inline constexpr int64_t kDefaultStageCacheBytes = int64_t{2} << 30;

struct QuantizeOptions {
  std::filesystem::path model_dir;
  std::filesystem::path out_dir;
  QuantGrid grid;
  std::string method = "gptq";     // preset (see method_preset)
  std::string objective;           // overrides the preset's objective when not empty
  std::string rounding;            // overrides the preset's backend when not empty
  ObjectiveSettings objective_settings;  // λ, saliency, α (name filled from method/objective;
                                         // alpha_mode "" = the preset's)
  RoundingOptions rounding_options;
  bool scale_search = false;       // AWQ-style scale/clip pre-pass per layer (the awq preset)
  ScaleSearchOptions scale_search_options;
  // Whether the scale search also clips: unset (auto) clips when the backend is rtn, as AWQ; a
  // calibrated backend (gptq, successive, beam) chooses its ranges with error feedback, and the
  // search's clip before it hurt (SmolLM2 W3 g64, gptq: KL 0.84 alone, 1.36 after the clip, 0.89
  // after the scales alone).
  std::optional<bool> scale_search_clip;

  // Calibration: exactly one of a text file, a token-id file, or sampling from the model
  // itself (none for rtn).
  std::filesystem::path calib_text;
  std::filesystem::path calib_tokens;
  bool calib_self = false;
  double calib_temperature = 1.0;
  int64_t nsamples = 128;
  int64_t seqlen = 2048;  // clamped to max_position_embeddings
  uint64_t seed = 0;
  double damp = 0.01;     // percdamp: fraction of mean(diag H)
  int max_damp_retries = 10;

  // MoE experts with fewer routed tokens than this (0: max(16, 0.5 % of N·L)) are "starved":
  // policy "rtn" quantizes them with RTN, "all-tokens" calibrates them on every token of the
  // layer (docs/methods.md §8). Either way each expert's routed token count is logged and reported.
  int64_t moe_min_tokens = 0;
  std::string moe_policy = "rtn";

  // Carry the full-precision stream X_f next to the quantized one (needed by asymmetric
  // objectives; forced on when the objective asks for it, off by default to save memory).
  bool keep_fp_stream = false;

  // down_proj's inputs are kept between their statistics and the advance to the next layer when
  // they take at most this much (else gate/up run again).
  int64_t stage_cache_bytes = kDefaultStageCacheBytes;

  ComputeOptions compute;
  bool force = false;     // replace an existing output folder
  // A run that was interrupted leaves its state in a work folder beside out_dir (README
  // "Resuming"); the same command continues from it. restart: discard it; resume = false: refuse
  // to run while it exists.
  bool restart = false;
  bool resume = true;
  bool progress = true;
};

QuantizeReport quantize(const QuantizeOptions& options);

}  // namespace sarqc

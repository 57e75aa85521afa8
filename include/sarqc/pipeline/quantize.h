#pragma once
// `sarqc quantize` as one library call (methods.md §7): calibration windows streamed through the
// model layer by layer; per true-sequential group of linears a Gram matrix, an objective and a
// rounding backend; the quantized layer produces the next layer's inputs; the result is written
// as a GPTQ checkpoint (formats.md) into a temporary folder renamed at the end.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "sarqc/model/compute.h"
#include "sarqc/objective/objective.h"
#include "sarqc/quant/grid.h"
#include "sarqc/rounding/rounder.h"
#include "sarqc/rounding/scale_search.h"

namespace sarqc {

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
  // layer (methods.md §8). Either way each expert's routed token count is logged and reported.
  int64_t moe_min_tokens = 0;
  std::string moe_policy = "rtn";

  // Carry the full-precision stream X_f next to the quantized one (needed by asymmetric
  // objectives; forced on when the objective asks for it, off by default to save memory).
  bool keep_fp_stream = false;

  ComputeOptions compute;
  bool force = false;     // replace an existing output folder
  bool progress = true;
};

struct ModuleRecord {
  int64_t layer = 0;
  std::string module;     // full name
  std::string method;     // backend used: gptq, rtn, rtn-fallback, or "unquantized"
  std::string reason;     // why not the configured backend, when it was not
  double loss = 0;        // E(Q) = tr((Q − W_ref) M (Q − W_ref)ᵀ)
  double relative_loss = 0;  // E(Q) / tr(W_ref M W_refᵀ)
  int64_t tokens = 0;     // calibration tokens in its Gram matrix
  double damp = 0;        // final percdamp
  double alpha = -1;      // interpolation used by an interp objective (-1: none or sampled)
  int64_t dead_columns = 0;
  double seconds = 0;
  int64_t peak_host_bytes = 0;  // process peak resident memory after this module
};

struct QuantizeReport {
  std::filesystem::path out_dir;
  std::string grid;  // description
  std::string method, objective, rounding;
  int64_t nsamples = 0, seqlen = 0;
  std::string calibration_sha256;
  std::vector<ModuleRecord> modules;
  std::vector<std::string> unquantized_modules;
  double seconds = 0;
  int64_t peak_host_bytes = 0;       // process peak resident memory
  int64_t estimated_peak_bytes = 0;  // one layer + its Gram matrices + the activation stream
};

struct MethodPreset {
  std::string objective, rounding;
  std::string alpha_mode = "fixed";  // for the interp objectives
  bool scale_search = false;         // AWQ pre-pass
};
// Presets (objective + backend): rtn = plain + rtn; gptq = plain + gptq; sarqc = sarqc + gptq;
// gptaq = interp + gptq; coreq = interp + successive; beam = interp + beam;
// sarqc-beam = sarqc+interp + beam; awq = scale/clip search + rtn. Throws a usage error otherwise.
MethodPreset method_preset(const std::string& method);

QuantizeReport quantize(const QuantizeOptions& options);

nlohmann::json to_json(const QuantizeReport& report);
std::string to_text(const QuantizeReport& report);

}  // namespace sarqc

#pragma once
// What `sarqc quantize` did: per module, per layer and in total (report.json, --json, the log).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "sarqc/objective/lambda_choice.h"

namespace sarqc {

struct ModuleRecord {
  int64_t layer = 0;
  std::string module;     // full name
  std::string method;     // backend used: gptq, rtn, rtn-fallback, or "unquantized"
  std::string reason;     // why not the configured backend, when it was not
  double loss = 0;        // E(Q) = tr((Q − W_ref) M (Q − W_ref)ᵀ)
  // E(Q) / tr(W_ref M W_refᵀ); the denominator from at most 256 evenly spaced rows (it costs an
  // m·n² product otherwise, as much as the GPTQ sweep itself)
  double relative_loss = 0;
  int64_t tokens = 0;     // calibration tokens in its Gram matrix
  double damp = 0;        // final percdamp
  double alpha = -1;      // interpolation used by an interp objective (-1: none or sampled)
  int64_t dead_columns = 0;
  double seconds = 0;
  int64_t peak_host_bytes = 0;  // process peak resident memory (VmHWM) after this module
  LambdaChoice lambda;          // sarqc objectives: how λ was chosen (mode "" otherwise)
};

// Where one layer's time went. On CUDA the phases are host times (kernels run asynchronously).
struct LayerRecord {
  int64_t layer = 0;
  double seconds = 0;
  double forward_seconds = 0;     // the activation streams through the layer
  double statistics_seconds = 0;  // Gram matrices (and D)
  double rounding_seconds = 0;    // objectives, backends, the scale search
  double write_seconds = 0;       // packing and writing the layer's tensors
};

// One process's part of a run. A run resumed after interruptions has several: each but the last
// was interrupted, and its time counts up to its last saved layer.
struct RunSession {
  std::string started;          // UTC, ISO 8601
  int64_t first_layer = 0;      // the layer it started or resumed at
  int64_t layers_done = 0;      // layers it completed (and saved)
  double restore_seconds = 0;   // reading the saved state (a resumed session)
  double state_seconds = 0;     // saving the state after each layer
  double seconds = 0;
  bool interrupted = false;
};

struct QuantizeReport {
  std::filesystem::path out_dir;
  std::string grid;  // description
  std::string method, objective, rounding;
  int64_t nsamples = 0, seqlen = 0;
  std::string calibration_sha256;
  std::vector<ModuleRecord> modules;
  std::vector<std::string> unquantized_modules;
  std::vector<LayerRecord> layers;
  std::string fingerprint;  // sha256 of the run's fingerprint items (pipeline/run_state.h)
  std::vector<RunSession> sessions;
  double seconds = 0;
  int64_t peak_host_bytes = 0;       // process peak resident memory (VmHWM: anonymous + mapped)
  int64_t peak_anonymous_bytes = 0;  // peak anonymous resident memory (sampled)
  int64_t peak_mapped_bytes = 0;     // peak resident pages of mapped files (the checkpoint)
  int64_t estimated_peak_bytes = 0;  // estimate_quantize_memory's peak
};

// A LambdaChoice as JSON (report.json's "lambda" of a module) and back.
nlohmann::json lambda_choice_json(const LambdaChoice& choice);
LambdaChoice lambda_choice_from_json(const nlohmann::json& j);

// The module's info-level log line.
void log_module(const ModuleRecord& record);

nlohmann::json to_json(const QuantizeReport& report);
// The per-module, per-layer and per-session records (saved with a resumable state) and back.
nlohmann::json records_to_json(const QuantizeReport& report);
// Throws a runtime Error naming the bad field.
void restore_records(QuantizeReport& report, const nlohmann::json& records);
std::string to_text(const QuantizeReport& report);

}  // namespace sarqc

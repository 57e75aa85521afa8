#pragma once
// What `quantize` saves after each completed layer so that a rerun of the same command after a
// crash continues from there and writes byte-identical output (README "Resuming"), and the
// fingerprint that rerun must match.
//
// state/state.json names everything carried from layer to layer: the next layer, the tensors
// already stored (and synced) in the output's shards, the α-sampling stream, the objective's
// closed-form α sums, the report's records, and the file holding the activation streams X_q
// (and X_f) at the layer boundary. Saving writes the streams file under a new name, then
// replaces state.json atomically, then deletes the old streams file, each step synced first:
// a crash anywhere leaves the old or the new state whole.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"

namespace sarqc {

struct QuantizeOptions;

// Every item a rerun must match, as "name" -> value: the sarqc version, config.json's sha256,
// each weight file's size and modification time, every option that changes the output, the
// calibration windows' sha256 and where the math runs (device, dtype, threads, BLAS kernels).
// `settings` is the quantization_config the run writes (its options).
nlohmann::json run_fingerprint_items(const ModelWeights& weights, const QuantizeOptions& options,
                                     const nlohmann::json& settings,
                                     const std::string& calibration_sha256);

// "name: VALUE when saved, VALUE now" for each item that differs (missing items included).
std::vector<std::string> fingerprint_differences(const nlohmann::json& saved,
                                                 const nlohmann::json& now);

struct SavedRun {
  nlohmann::json fingerprint;  // run_fingerprint_items of the run that saved it
  int64_t next_layer = 0;
  int64_t layers = 0;
  bool any_reordered = false;
  std::vector<std::string> written;  // tensor names in the output's shards
  std::string alpha_sampler;         // AlphaSampler::state()
  std::string objective;             // Objective::save_state()
  nlohmann::json records;            // records_to_json(report)
  std::string streams_file;          // in the state folder; empty: no streams
};

class RunStateStore {
 public:
  explicit RunStateStore(std::filesystem::path dir) : dir_(std::move(dir)) {}

  // The saved state, or nothing when none was saved. Files no state refers to (a save that was
  // interrupted) are removed. A state.json that cannot be read is a runtime Error.
  std::optional<SavedRun> load() const;
  // Saves `run` with the streams (fp may be null or empty); sets run.streams_file.
  void save(SavedRun& run, const HiddenBatches& q, const HiddenBatches* fp) const;
  // Replaces every batch of q (and fp) by the saved one, which must have its shape and dtype
  // (the caller builds the batches as the run began: same split, same storage device).
  void restore_streams(const SavedRun& run, HiddenBatches& q, HiddenBatches* fp) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace sarqc

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

#include "sarqc/io/safetensors_writer.h"

#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"

namespace sarqc {

struct QuantizeOptions;

// Every item a rerun must match, as "name" -> value: the sarqc version, config.json's sha256,
// each weight file's size and modification time, every option that changes the output, the
// calibration windows' sha256 and where the math runs (device, dtype, threads, BLAS kernels).
nlohmann::json run_fingerprint_items(const ModelWeights& weights, const QuantizeOptions& options,
                                     const std::string& calibration_sha256);

// "name: VALUE when saved, VALUE now" for each item that differs (missing items included).
std::vector<std::string> fingerprint_differences(const nlohmann::json& saved,
                                                 const nlohmann::json& now);

struct SavedRun {
  nlohmann::json fingerprint;  // run_fingerprint_items of the run that saved it
  int64_t next_layer = 0;
  int64_t layers = 0;
  bool any_reordered = false;
  WrittenTensors written;  // the tensors in the output's shards and their checksums
  std::string alpha_sampler;         // AlphaSampler::state()
  std::string objective;             // Objective::save_state()
  nlohmann::json records;            // records_to_json(report)
  std::string streams_file;          // in the state folder (rank 0's); empty: no streams
  int ranks = 1;                     // each rank r > 0 saved streams_of_rank(streams_file, r)
};

// With several ranks sharing the folder, each rank saves and restores its own streams file
// (rank 0: `streams-NNNNN.safetensors`, rank r: `streams-NNNNN.rank-R.safetensors`) and rank 0
// alone writes state.json, after every rank's file is on disk (the caller's barrier).
class RunStateStore {
 public:
  explicit RunStateStore(std::filesystem::path dir, int rank = 0)
      : dir_(std::move(dir)), rank_(rank) {}

  // The saved state, or nothing when none was saved. Files no state refers to (a save that was
  // interrupted) are removed. A state.json that cannot be read is a runtime Error. Rank 0 only.
  std::optional<SavedRun> load() const;
  // The saved state as it is, touching nothing (the other ranks, after rank 0's load()).
  std::optional<SavedRun> read() const;
  // Saves `run` with the streams (fp may be null or empty); sets run.streams_file. One rank:
  // save_streams, save_state, remove_streams of the previous file.
  void save(SavedRun& run, const HiddenBatches& q, const HiddenBatches* fp) const;
  // This rank's streams for run.next_layer, synced; sets run.streams_file.
  void save_streams(SavedRun& run, const HiddenBatches& q, const HiddenBatches* fp) const;
  // Replaces state.json atomically (rank 0).
  void save_state(const SavedRun& run) const;
  // Deletes this rank's streams file of the state before `run`.
  void remove_streams(const std::string& previous, const SavedRun& run) const;
  // Replaces every batch of q (and fp) by this rank's saved one, which must have its shape and
  // dtype (the caller builds the batches as the run began: same split, same storage device).
  void restore_streams(const SavedRun& run, HiddenBatches& q, HiddenBatches* fp) const;

  static std::string streams_of_rank(const std::string& streams_file, int rank);

 private:
  std::filesystem::path dir_;
  int rank_ = 0;
};

}  // namespace sarqc

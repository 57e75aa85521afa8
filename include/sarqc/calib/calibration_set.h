#pragma once
// Calibration windows (docs/methods.md §7): N windows of L tokens at seeded random offsets, raw
// token slices without an inserted BOS, from a text file (tokenized once with the model's
// tokenizer) or from a file of token ids.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sarqc {

class Tokenizer;
class StreamingModel;

struct CalibrationSet {
  at::Tensor ids;           // [N, L] int64
  std::string source;       // the file
  int64_t source_tokens = 0;
  std::string fingerprint;  // sha256 of the window ids (int32 little-endian), for the config
};

// How the windows go through the layers: in batches fixed by their number and length alone, so
// that every number of ranks sees the same batches (ranks take whole batches). At most 8192
// tokens per batch (at least one window), and 16 batches or more when there are 16 windows or
// more, so that up to 16 ranks can share any calibration.
struct CalibrationBatches {
  int64_t per_batch = 1;  // windows per batch (the last batch may have fewer)
  int64_t batches = 0;
};
CalibrationBatches calibration_batches(int64_t windows, int64_t seqlen);

// Token ids of a file: a JSON array of integers, or raw little-endian int32 (any other content).
std::vector<int32_t> read_token_file(const std::filesystem::path& file);

// Windows from `tokens`; throws a bad-input Error naming `source` when fewer than L tokens exist.
CalibrationSet sample_windows(const std::vector<int32_t>& tokens, int64_t nsamples,
                              int64_t seqlen, uint64_t seed, const std::string& source);

CalibrationSet calibration_from_text(const Tokenizer& tokenizer, const std::filesystem::path& file,
                                     int64_t nsamples, int64_t seqlen, uint64_t seed);
// Every id of the file is checked against `vocab_size` (a bad-input Error names the first one
// outside it and its position), not only those the windows happen to draw. A JSON array of
// equally long arrays is taken as the windows themselves (nsamples, seqlen and seed unused).
CalibrationSet calibration_from_token_file(const std::filesystem::path& file, int64_t nsamples,
                                           int64_t seqlen, uint64_t seed, int64_t vocab_size);

// `--calib self`: N sequences sampled from the model itself, each BOS followed by L − 1 tokens
// drawn at `temperature` with one generator seeded once (sampling runs on the CPU, so the same
// seed gives the same windows on any device). Needs the model's layers resident.
CalibrationSet calibration_from_model(const StreamingModel& model, int32_t bos_id,
                                      int64_t nsamples, int64_t seqlen, uint64_t seed,
                                      double temperature = 1.0);

}  // namespace sarqc

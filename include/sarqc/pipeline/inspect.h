#pragma once
// `sarqc inspect` as a library call: what a model folder holds and what quantizing it will need.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "sarqc/io/hf_config.h"
#include "sarqc/io/tokenizer.h"
#include "sarqc/model/layout.h"

namespace sarqc {

// Version of the JSON document written by `sarqc inspect --json`; bumped on incompatible change.
inline constexpr int kInspectSchemaVersion = 1;

struct InspectOptions {
  std::filesystem::path model_dir;
  // Calibration shape assumed by the memory estimate (the quantize defaults).
  int64_t nsamples = 128;
  int64_t seqlen = 2048;  // clamped to max_position_embeddings
};

struct TokenizerSummary {
  std::string kind;  // "sentencepiece"
  std::filesystem::path file;
  int64_t vocab_size = 0;
  SpecialTokens special;
};

// estimate_quantize_memory (pipeline/memory_estimate.h) for quantize's defaults.
struct MemoryEstimate {
  uint64_t weights_bytes = 0;        // all tensor data in the checkpoint
  uint64_t largest_layer_bytes = 0;  // one decoder layer in fp32: what sits on the device
  uint64_t largest_gram_bytes = 0;   // fp32 n×n Gram matrices of one calibration group
  uint64_t rounding_bytes = 0;       // the largest module's rounding working set
  uint64_t calibration_stream_bytes = 0;  // the activation stream and its stage caches
  uint64_t forward_bytes = 0;        // one forward batch's intermediates
  uint64_t quantize_peak_bytes = 0;  // what quantize prints as its estimated peak
  std::string description;
  int64_t nsamples = 0;
  int64_t seqlen = 0;
};

struct ModelSummary {
  std::filesystem::path model_dir;
  ModelConfig config;
  ModelLayout layout;
  std::vector<std::string> files;         // safetensors files, relative to model_dir
  bool sharded = false;
  size_t tensor_count = 0;
  std::map<std::string, int64_t> dtype_tensor_counts;  // "F32" -> number of tensors
  int64_t parameters = 0;                 // elements of all tensors in the checkpoint
  int64_t quantizable_parameters = 0;     // elements of quantizable linear weights
  MemoryEstimate memory;
  std::optional<TokenizerSummary> tokenizer;
  std::string tokenizer_error;            // why a tokenizer file present could not be used
  std::vector<std::string> warnings;
  std::vector<std::string> unused_tensors;
};

// Reads config.json, validates every checkpoint header and the tensor layout, loads the
// tokenizer. Reads no tensor data. Throws a bad-input Error on the first problem.
ModelSummary inspect_model(const InspectOptions& options);

nlohmann::json to_json(const ModelSummary& summary);
std::string to_text(const ModelSummary& summary);

}  // namespace sarqc

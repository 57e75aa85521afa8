#pragma once
// Perplexity on a text file, and KL divergence from a reference model, with the protocol of
// ../shared/fixtures/README.md: ids = [BOS] + encode(whole text); non-overlapping windows of
// `seqlen` inputs from the start, each scoring the next token at every position (so a window
// reads seqlen + 1 ids); only the first window starts with BOS; ppl = exp(mean NLL).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "sarqc/model/compute.h"

namespace sarqc {

inline constexpr int64_t kDefaultEvalSeqlen = 2048;

struct EvalOptions {
  std::filesystem::path model_dir;
  std::filesystem::path data_file;
  std::filesystem::path reference_dir;  // empty: no KL divergence
  int64_t seqlen = 0;       // 0: min(max_position_embeddings, 2048)
  int64_t max_windows = 0;  // 0: every full window of the text
  ComputeOptions compute;
  bool progress = true;     // draw a progress bar when stderr is a terminal
};

struct EvalResult {
  std::string model, data, reference, device, dtype;
  int64_t seqlen = 0, windows = 0, scored_tokens = 0, total_tokens = 0;
  double mean_nll = 0, ppl = 0;
  // With a reference model: mean over scored positions of KL(P_reference || P_model), its 99th
  // percentile and maximum, how often both pick the same top token, and the reference's own ppl.
  std::optional<double> kld_mean, kld_p99, kld_max, top1_agreement, reference_ppl;
  double tokenize_seconds = 0, forward_seconds = 0;
  double tokens_per_second() const { return forward_seconds > 0 ? scored_tokens / forward_seconds : 0; }
};

struct EvalWindows {
  at::Tensor inputs;   // [K, seqlen] int64
  at::Tensor targets;  // [K, seqlen] int64: inputs shifted by one
};

// Cuts windows from `ids`; throws a bad-input Error naming `source` when there is not even one.
EvalWindows make_eval_windows(const std::vector<int32_t>& ids, int64_t seqlen,
                              int64_t max_windows, const std::string& source);

EvalResult evaluate(const EvalOptions& options);

nlohmann::json to_json(const EvalResult& result);
std::string to_text(const EvalResult& result);

}  // namespace sarqc

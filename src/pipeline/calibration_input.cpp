#include "sarqc/pipeline/calibration_input.h"

#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

// --nsamples x --seqlen sampled windows: one activation stream of them (hidden_size fp32 values
// per token) must fit in this machine's memory, or the run would die "out of memory" naming
// nothing after minutes of work (--nsamples 2^40 did). Windows given in a token file are as
// many as the file holds.
void check_calibration_fits(const QuantizeOptions& o, const ModelConfig& cfg, int64_t seqlen) {
  if (!o.calib_tokens.empty()) return;
  const double tokens = static_cast<double>(o.nsamples) * static_cast<double>(seqlen);
  const double stream = tokens * static_cast<double>(cfg.hidden_size) * 4;
  const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) *
                        static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  if (memory > 0 && stream > memory)
    throw_usage(fmt::format("--nsamples {} x --seqlen {}: one activation stream of {:.0f} "
                            "tokens x {} fp32 values needs {:.1f} GiB, more than this machine's "
                            "{:.1f} GiB of memory",
                            o.nsamples, seqlen, tokens, cfg.hidden_size, stream / (1 << 30),
                            memory / (1 << 30)));
}

}  // namespace

CalibrationSet load_calibration(const QuantizeOptions& o, const ModelWeights& weights) {
  const ModelConfig& cfg = weights.config();
  CalibrationSet calib;
  int64_t seqlen = o.seqlen;
  if (cfg.max_position_embeddings > 0 && seqlen > cfg.max_position_embeddings) {
    spdlog::info("--seqlen {} exceeds max_position_embeddings; using {}", seqlen,
                 cfg.max_position_embeddings);
    seqlen = cfg.max_position_embeddings;
  }
  check_calibration_fits(o, cfg, seqlen);
  if (o.calib_self) {
    const std::optional<int64_t> bos = cfg.bos_token_id;
    if (!bos)
      throw_bad_input(
          fmt::format("{}: --calib self starts each sample at BOS, but config.json "
                      "has no bos_token_id",
                      o.model_dir.string()));
    StreamingModel sampler(weights, o.compute);
    sampler.keep_layers_resident();
    calib = calibration_from_model(sampler, static_cast<int32_t>(*bos), o.nsamples, seqlen,
                                   o.seed, o.calib_temperature);
  } else if (!o.calib_text.empty()) {
    const auto tokenizer = load_tokenizer(o.model_dir);
    calib = calibration_from_text(*tokenizer, o.calib_text, o.nsamples, seqlen, o.seed);
  } else {
    calib = calibration_from_token_file(o.calib_tokens, o.nsamples, seqlen, o.seed,
                                        cfg.vocab_size);
  }
  const int64_t top = calib.ids.max().item<int64_t>();
  if (top >= cfg.vocab_size)
    throw_bad_input(fmt::format("{}: token id {} is outside the model's vocab_size {}",
                                calib.source, top, cfg.vocab_size));
  if (cfg.max_position_embeddings > 0 && calib.ids.size(1) > cfg.max_position_embeddings)
    throw_bad_input(fmt::format("{}: windows of {} tokens, but the model has "
                                "max_position_embeddings {}; give windows of at most that many",
                                calib.source, calib.ids.size(1), cfg.max_position_embeddings));
  if (calib.ids.size(0) != o.nsamples || calib.ids.size(1) != seqlen)
    spdlog::info("calibration: {} gives its own {} windows of {} tokens", calib.source,
                 calib.ids.size(0), calib.ids.size(1));
  spdlog::info("calibration: {} windows of {} tokens from {} ({} tokens), seed {}",
               calib.ids.size(0), calib.ids.size(1), calib.source, calib.source_tokens, o.seed);
  return calib;
}

}  // namespace sarqc

#include "sarqc/eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/error.h"
#include "sarqc/util/file.h"
#include "sarqc/util/progress.h"
#include "sarqc/util/stopwatch.h"

namespace sarqc {
namespace {

// Positions scored per logits computation: bounds the [chunk, vocab] buffers.
constexpr int64_t kScoreChunk = 512;

int64_t resolve_seqlen(const ModelConfig& cfg, int64_t requested) {
  const int64_t max_pos = cfg.max_position_embeddings;
  if (requested <= 0) {
    const int64_t seqlen = max_pos > 0 ? std::min(max_pos, kDefaultEvalSeqlen) : kDefaultEvalSeqlen;
    spdlog::info("--seqlen not given: using {} (max_position_embeddings {})", seqlen, max_pos);
    return seqlen;
  }
  if (max_pos > 0 && requested > max_pos)
    spdlog::warn("--seqlen {} exceeds the model's max_position_embeddings {}; quality beyond "
                 "the trained context is not meaningful",
                 requested, max_pos);
  return requested;
}

std::vector<int32_t> tokenize(const Tokenizer& tokenizer, const std::filesystem::path& file,
                              int64_t vocab_size) {
  const std::string text = read_text_file(file);
  if (text.empty()) throw_bad_input(fmt::format("{}: the file is empty", file.string()));
  std::vector<int32_t> body;
  try {
    body = tokenizer.encode(text);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw_bad_input(fmt::format("{}: the tokenizer ({}) cannot encode this text: {}",
                                file.string(), tokenizer.source().string(), e.what()));
  }
  if (body.empty())
    throw_bad_input(fmt::format("{}: the tokenizer ({}) produced no tokens for {} bytes of text",
                                file.string(), tokenizer.source().string(), text.size()));
  const SpecialTokens& special = tokenizer.special();
  std::vector<int32_t> ids = special.prefix;
  ids.insert(ids.end(), body.begin(), body.end());
  int64_t unknown = 0;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size)
      throw_bad_input(fmt::format("{}: token id {} is outside the model's vocab_size {} "
                                  "(tokenizer and config.json disagree)",
                                  tokenizer.source().string(), id, vocab_size));
    if (special.unk_id && id == *special.unk_id) ++unknown;
  }
  if (unknown > 0)
    spdlog::warn("{}: {} of {} tokens ({:.2f}%) are the unknown token: the tokenizer does not "
                 "cover this text well",
                 file.string(), unknown, ids.size(), 100.0 * unknown / ids.size());
  return ids;
}

HiddenBatches final_hidden(const StreamingModel& model, const at::Tensor& inputs,
                           const std::string& label, bool progress) {
  HiddenBatches hidden = model.embed(inputs);
  ProgressBar bar(label, model.weights().config().num_hidden_layers);
  if (!progress) bar.finish();
  model.run_layers(hidden, [&](int64_t) { bar.advance(); });
  return hidden;
}

}  // namespace

EvalWindows make_eval_windows(const std::vector<int32_t>& ids, int64_t seqlen,
                              int64_t max_windows, const std::string& source) {
  if (seqlen < 1) throw_usage(fmt::format("--seqlen must be at least 1, got {}", seqlen));
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t available = (n - 1) / seqlen;  // each window reads seqlen + 1 ids
  if (available < 1)
    throw_bad_input(fmt::format("{}: {} tokens, but one window of --seqlen {} needs {}; use a "
                                "longer text or a shorter --seqlen",
                                source, n, seqlen, seqlen + 1));
  int64_t windows = available;
  if (max_windows > 0) windows = std::min(windows, max_windows);
  const at::Tensor all = at::tensor(at::ArrayRef<int32_t>(ids)).to(at::kLong);
  const at::Tensor span = all.narrow(0, 0, windows * seqlen + 1);
  return {span.narrow(0, 0, windows * seqlen).view({windows, seqlen}),
          span.narrow(0, 1, windows * seqlen).view({windows, seqlen})};
}

EvalResult evaluate(const EvalOptions& o) {
  check_dtype_supported(o.compute.device, o.compute.dtype);  // before any work
  EvalResult r;
  r.model = o.model_dir.string();
  r.data = o.data_file.string();
  r.reference = o.reference_dir.string();
  r.device = o.compute.device.str();
  r.dtype = activation_dtype_name(o.compute.dtype);

  const ModelWeights weights = ModelWeights::open(o.model_dir);
  const ModelConfig& cfg = weights.config();
  std::optional<ModelWeights> reference;
  if (!o.reference_dir.empty()) {
    reference.emplace(ModelWeights::open(o.reference_dir));
    if (reference->config().vocab_size != cfg.vocab_size)
      throw_bad_input(fmt::format("{}: vocab_size {} differs from the model's {}; KL divergence "
                                  "needs the same vocabulary",
                                  o.reference_dir.string(), reference->config().vocab_size,
                                  cfg.vocab_size));
  }
  r.seqlen = resolve_seqlen(cfg, o.seqlen);

  Stopwatch clock;
  const auto tokenizer = load_tokenizer(o.model_dir);
  const std::vector<int32_t> ids = tokenize(*tokenizer, o.data_file, cfg.vocab_size);
  r.total_tokens = static_cast<int64_t>(ids.size());
  const EvalWindows windows = make_eval_windows(ids, r.seqlen, o.max_windows, r.data);
  r.windows = windows.inputs.size(0);
  r.tokenize_seconds = clock.seconds();
  spdlog::info("{}: {} tokens; evaluating {} window(s) of {} on {} ({})", r.data, r.total_tokens,
               r.windows, r.seqlen, r.device, r.dtype);

  clock.restart();
  const StreamingModel model(weights, o.compute);
  const HiddenBatches hidden = final_hidden(model, windows.inputs, "layers", o.progress);
  std::optional<StreamingModel> ref_model;
  HiddenBatches ref_hidden;
  if (reference) {
    ref_model.emplace(*reference, o.compute);
    ref_hidden = final_hidden(*ref_model, windows.inputs, "reference layers", o.progress);
  }

  // Score every position: NLL in double, KL(P_ref || P_model) per position.
  double nll_sum = 0, ref_nll_sum = 0;
  int64_t agree = 0, seq_offset = 0;
  std::vector<at::Tensor> kls;
  const at::Tensor targets = windows.targets.to(o.compute.device);
  for (size_t b = 0; b < hidden.batches.size(); ++b) {
    const at::Tensor& batch = hidden.batches[b];
    for (int64_t s = 0; s < batch.size(0); ++s) {
      for (int64_t t0 = 0; t0 < r.seqlen; t0 += kScoreChunk) {
        const int64_t n = std::min(kScoreChunk, r.seqlen - t0);
        const at::Tensor target = targets[seq_offset + s].narrow(0, t0, n).unsqueeze(1);
        const at::Tensor logp = at::log_softmax(model.logits(batch[s].narrow(0, t0, n)), -1);
        nll_sum -= logp.gather(1, target).to(at::kDouble).sum().item<double>();
        if (!ref_model) continue;
        const at::Tensor ref_logp = at::log_softmax(
            ref_model->logits(ref_hidden.batches[b][s].narrow(0, t0, n)), -1);
        ref_nll_sum -= ref_logp.gather(1, target).to(at::kDouble).sum().item<double>();
        kls.push_back((ref_logp.exp() * (ref_logp - logp)).sum(-1).to(at::kDouble).cpu());
        agree += (ref_logp.argmax(-1) == logp.argmax(-1)).sum().item<int64_t>();
      }
    }
    seq_offset += batch.size(0);
  }
  r.forward_seconds = clock.seconds();
  r.scored_tokens = r.windows * r.seqlen;
  r.mean_nll = nll_sum / static_cast<double>(r.scored_tokens);
  r.ppl = std::exp(r.mean_nll);
  // A NaN perplexity is no result: the model (warned about above if its weights hold NaN or
  // Inf) or its activations are not finite.
  if (std::isnan(r.mean_nll))
    throw_bad_input(fmt::format("{}: the model's log-likelihood is not a number (NaN or Inf in "
                                "its weights or activations{})",
                                o.model_dir.string(),
                                o.compute.dtype == at::kFloat ? "" : "; try --dtype fp32"));
  if (ref_model) {
    const at::Tensor kl = at::cat(kls);
    r.kld_mean = kl.mean().item<double>();
    r.kld_p99 = at::quantile(kl, 0.99).item<double>();
    r.kld_max = kl.max().item<double>();
    r.top1_agreement = static_cast<double>(agree) / static_cast<double>(r.scored_tokens);
    r.reference_ppl = std::exp(ref_nll_sum / static_cast<double>(r.scored_tokens));
  }
  return r;
}

nlohmann::json to_json(const EvalResult& r) {
  nlohmann::json j = {{"model", r.model},
                      {"data", r.data},
                      {"device", r.device},
                      {"dtype", r.dtype},
                      {"seqlen", r.seqlen},
                      {"windows", r.windows},
                      {"scored_tokens", r.scored_tokens},
                      {"total_tokens", r.total_tokens},
                      {"mean_nll", r.mean_nll},
                      {"ppl", r.ppl},
                      {"tokenize_seconds", r.tokenize_seconds},
                      {"forward_seconds", r.forward_seconds},
                      {"tokens_per_second", r.tokens_per_second()}};
  if (r.kld_mean) {
    j["reference"] = r.reference;
    j["reference_ppl"] = *r.reference_ppl;
    j["kld_mean"] = *r.kld_mean;
    j["kld_p99"] = *r.kld_p99;
    j["kld_max"] = *r.kld_max;
    j["top1_agreement"] = *r.top1_agreement;
  }
  return j;
}

std::string to_text(const EvalResult& r) {
  std::string out = fmt::format(
      "model      {}\ndata       {}\nwindows    {} x {} tokens ({} scored of {})\n"
      "mean NLL   {:.6f}\nperplexity {:.4f}\n",
      r.model, r.data, r.windows, r.seqlen, r.scored_tokens, r.total_tokens, r.mean_nll, r.ppl);
  if (r.kld_mean)
    out += fmt::format(
        "reference  {} (perplexity {:.4f})\nKLD        mean {:.6f}, p99 {:.6f}, max {:.6f}\n"
        "same top-1 {:.2f}%\n",
        r.reference, *r.reference_ppl, *r.kld_mean, *r.kld_p99, *r.kld_max,
        100.0 * *r.top1_agreement);
  out += fmt::format("speed      {:.0f} tokens/s on {} ({}), {:.2f} s forward, {:.2f} s tokenize\n",
                     r.tokens_per_second(), r.device, r.dtype, r.forward_seconds,
                     r.tokenize_seconds);
  return out;
}

}  // namespace sarqc

#include "sarqc/calib/calibration_set.h"

#include <optional>

#include "sarqc/util/interrupt.h"

#include <cstring>
#include <random>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/util/progress.h"
#include "sarqc/util/error.h"
#include "sarqc/util/file.h"
#include "sarqc/util/sha256.h"

namespace sarqc {

namespace {

// Token ids of a token file's bytes: a JSON array of integers, or raw little-endian int32.
std::vector<int32_t> parse_token_bytes(const std::filesystem::path& file,
                                       const std::string& bytes) {
  const size_t first = bytes.find_first_not_of(" \t\r\n");
  std::vector<int32_t> ids;
  if (first != std::string::npos && bytes[first] == '[') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(bytes);
    } catch (const nlohmann::json::exception& e) {
      throw_bad_input(fmt::format("{}: not a valid JSON array of token ids: {}", file.string(),
                                  e.what()));
    }
    for (const auto& v : j) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
        throw_bad_input(fmt::format("{}: expected non-negative integer token ids, found {}",
                                    file.string(), v.dump()));
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    return ids;
  }
  // Raw int32 ids are read only when the file is not JSON: an object, a string or "1234"
  // whose size happens to be a multiple of 4 must not become token ids. (Raw ids of any real
  // vocabulary never parse as JSON: an id below 2^24 has a zero byte, which JSON text cannot
  // hold; the parse stops at the first one.)
  const nlohmann::json j = nlohmann::json::parse(bytes, nullptr, false);
  if (!j.is_discarded())
    throw_bad_input(fmt::format("{}: a JSON {}, expected a JSON array of token ids, an array of "
                                "windows, or raw little-endian int32 ids",
                                file.string(), j.type_name()));
  if (bytes.size() % 4 != 0)
    throw_bad_input(fmt::format("{}: {} bytes is not a whole number of little-endian int32 token "
                                "ids (and the file is not a JSON array)",
                                file.string(), bytes.size()));
  ids.resize(bytes.size() / 4);
  std::memcpy(ids.data(), bytes.data(), bytes.size());
  for (int32_t id : ids)
    if (id < 0) throw_bad_input(fmt::format("{}: negative token id {}", file.string(), id));
  return ids;
}

// The set of `windows` windows of `length` tokens laid out one after another in `flat`.
CalibrationSet windows_set(const std::vector<int32_t>& flat, int64_t windows, int64_t length,
                           const std::string& source, int64_t source_tokens) {
  CalibrationSet set;
  set.source = source;
  set.source_tokens = source_tokens;
  set.fingerprint = sha256_hex(flat.data(), flat.size() * sizeof(int32_t));
  set.ids = at::tensor(at::ArrayRef<int32_t>(flat)).to(at::kLong).view({windows, length});
  return set;
}

}  // namespace

CalibrationBatches calibration_batches(int64_t windows, int64_t seqlen) {
  constexpr int64_t kBatchTokens = 8192, kMinBatches = 16;
  CalibrationBatches b;
  const int64_t by_tokens = std::max<int64_t>(1, kBatchTokens / std::max<int64_t>(seqlen, 1));
  const int64_t by_count = std::max<int64_t>(1, (windows + kMinBatches - 1) / kMinBatches);
  b.per_batch = std::min(by_tokens, by_count);
  b.batches = (windows + b.per_batch - 1) / b.per_batch;
  return b;
}

std::vector<int32_t> read_token_file(const std::filesystem::path& file) {
  return parse_token_bytes(file, read_text_file(file));
}

CalibrationSet sample_windows(const std::vector<int32_t>& tokens, int64_t nsamples,
                              int64_t seqlen, uint64_t seed, const std::string& source) {
  if (nsamples < 1) throw_usage(fmt::format("--nsamples must be at least 1, got {}", nsamples));
  if (seqlen < 1) throw_usage(fmt::format("--seqlen must be at least 1, got {}", seqlen));
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < seqlen)
    throw_bad_input(fmt::format("{}: {} tokens found, but one calibration window of --seqlen {} "
                                "needs {}; give more text or a shorter --seqlen",
                                source, n, seqlen, seqlen));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> offset(0, n - seqlen);
  std::vector<int32_t> flat;
  flat.reserve(static_cast<size_t>(nsamples * seqlen));
  for (int64_t s = 0; s < nsamples; ++s) {
    const int64_t start = offset(rng);
    flat.insert(flat.end(), tokens.begin() + start, tokens.begin() + start + seqlen);
  }
  return windows_set(flat, nsamples, seqlen, source, n);
}

CalibrationSet calibration_from_text(const Tokenizer& tokenizer, const std::filesystem::path& file,
                                     int64_t nsamples, int64_t seqlen, uint64_t seed) {
  const std::string text = read_text_file(file);
  if (text.empty()) throw_bad_input(fmt::format("{}: the calibration file is empty", file.string()));
  return sample_windows(tokenizer.encode(text), nsamples, seqlen, seed, file.string());
}

namespace {

// A JSON array of equally long arrays: calibration windows given as they are (as GPTQModel and
// llm-compressor take them), so that other tools can be run on exactly the same data.
std::optional<CalibrationSet> given_windows(const std::filesystem::path& file,
                                            const std::string& bytes, int64_t vocab_size) {
  const size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || bytes[first] != '[') return std::nullopt;
  const size_t second = bytes.find_first_not_of(" \t\r\n", first + 1);
  if (second == std::string::npos || bytes[second] != '[') return std::nullopt;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(bytes);
  } catch (const nlohmann::json::exception& e) {
    throw_bad_input(fmt::format("{}: not a valid JSON array of windows: {}", file.string(),
                                e.what()));
  }
  std::vector<int32_t> flat;
  const size_t length = j.at(0).is_array() ? j.at(0).size() : 0;
  for (size_t w = 0; w < j.size(); ++w) {
    if (!j[w].is_array())
      throw_bad_input(fmt::format("{}: window {} is {}, expected an array of token ids",
                                  file.string(), w, j[w].type_name()));
    if (j[w].empty())
      throw_bad_input(fmt::format("{}: window {} is empty, expected at least one token id",
                                  file.string(), w));
    if (j[w].size() != length)
      throw_bad_input(fmt::format("{}: window {} has {} token ids and window 0 has {}: windows "
                                  "must be equally long",
                                  file.string(), w, j[w].size(), length));
    for (size_t t = 0; t < length; ++t) {
      const nlohmann::json& v = j[w][t];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab_size)
        throw_bad_input(fmt::format("{}: window {} position {}: expected a token id below the "
                                    "model's vocab_size {}, found {}",
                                    file.string(), w, t, vocab_size, v.dump()));
      flat.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
  }
  return windows_set(flat, static_cast<int64_t>(j.size()), static_cast<int64_t>(length),
                     file.string(), static_cast<int64_t>(flat.size()));
}

}  // namespace

CalibrationSet calibration_from_token_file(const std::filesystem::path& file, int64_t nsamples,
                                           int64_t seqlen, uint64_t seed, int64_t vocab_size) {
  const std::string bytes = read_text_file(file);  // read once: token files can be large
  if (auto windows = given_windows(file, bytes, vocab_size)) return *windows;
  const std::vector<int32_t> ids = parse_token_bytes(file, bytes);
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= vocab_size)
      throw_bad_input(fmt::format("{}: token id {} at position {} is outside the model's "
                                  "vocab_size {}",
                                  file.string(), ids[i], i, vocab_size));
  return sample_windows(ids, nsamples, seqlen, seed, file.string());
}

CalibrationSet calibration_from_model(const StreamingModel& model, int32_t bos_id,
                                      int64_t nsamples, int64_t seqlen, uint64_t seed,
                                      double temperature) {
  if (nsamples < 1 || seqlen < 2)
    throw_usage(fmt::format("--calib self needs --nsamples >= 1 and --seqlen >= 2, got {} and {}",
                            nsamples, seqlen));
  if (!(temperature > 0)) throw_usage("sampling temperature must be positive");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor ids = at::empty({nsamples, seqlen}, at::kLong);
  ids.select(1, 0).fill_(bos_id);
  std::vector<KvCache> caches;
  ProgressBar bar("sampling calibration text", seqlen - 1);
  at::Tensor next = ids.narrow(1, 0, 1);
  for (int64_t t = 1; t < seqlen; ++t) {
    throw_if_interrupted();
    const at::Tensor logits = model.forward_cached(next, caches).select(1, -1).cpu();
    const at::Tensor probs = at::softmax(logits.to(at::kDouble) / temperature, -1);
    next = at::multinomial(probs, 1, /*replacement=*/true, gen);  // [N, 1]
    ids.select(1, t).copy_(next.squeeze(1));
    bar.advance();
  }
  bar.finish();
  CalibrationSet set;
  set.ids = ids;
  set.source = fmt::format("self (sampled from the model, temperature {}, seed {})", temperature,
                           seed);
  set.source_tokens = ids.numel();
  const at::Tensor as_int = ids.to(at::kInt).contiguous();
  set.fingerprint = sha256_hex(as_int.data_ptr<int32_t>(), as_int.numel() * sizeof(int32_t));
  return set;
}

}  // namespace sarqc

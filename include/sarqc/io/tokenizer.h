#pragma once
// Text <-> token ids for calibration and evaluation. A model folder's tokenizer.json (the
// HuggingFace tokenizers pipeline, src/tokenizer/) is preferred; a sentencepiece tokenizer.model
// is used otherwise. The special-token conventions come from tokenizer_config.json (and
// special_tokens_map.json for sentencepiece) as transformers applies them.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sarqc {

struct SpecialTokens {
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  std::optional<int32_t> unk_id;
  // What encoding with specials puts around the text: [BOS] and [] for Llama, nothing for Qwen.
  std::vector<int32_t> prefix;
  std::vector<int32_t> suffix;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text` with no special tokens added. Bytes that are not valid UTF-8 are read as
  // U+FFFD, one per maximal invalid subpart.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece" or "tokenizer.json BPE"

  // special().prefix + encode() + special().suffix.
  std::vector<int32_t> encode_with_specials(std::string_view text) const;

  const SpecialTokens& special() const { return special_; }
  const std::filesystem::path& source() const { return source_; }

 protected:
  SpecialTokens special_;
  std::filesystem::path source_;
};

// The tokenizer file load_tokenizer would use in `model_dir`, or nullopt when there is none.
std::optional<std::filesystem::path> find_tokenizer_file(const std::filesystem::path& model_dir);

// Throws a bad-input Error naming the file when there is no usable tokenizer.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir);

}  // namespace sarqc

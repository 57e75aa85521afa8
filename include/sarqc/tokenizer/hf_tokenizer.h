#pragma once
// The HuggingFace tokenizers pipeline read from tokenizer.json: added tokens are cut out of the
// text first, every other section is normalized, pre-tokenized and encoded by the BPE model; the
// post-processor (or tokenizer_config.json's add_bos_token/add_eos_token) says which special ids
// surround a sequence. The reference for every behaviour is HF tokenizers (the Rust library that
// transformers, vLLM and TGI encode with; tests/tokenizer/test_conformance.cpp).
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "sarqc/io/tokenizer.h"
#include "sarqc/tokenizer/added_tokens.h"
#include "sarqc/tokenizer/bpe_model.h"
#include "sarqc/tokenizer/decoder.h"
#include "sarqc/tokenizer/normalizer.h"
#include "sarqc/tokenizer/pre_tokenizer.h"

namespace sarqc::tokenizer {

class HfTokenizer final : public Tokenizer {
 public:
  // Reads `model_dir`/tokenizer.json and, when present, tokenizer_config.json. Any malformed or
  // unsupported component is a bad-input error naming the file and the component.
  explicit HfTokenizer(const std::filesystem::path& model_dir);
  ~HfTokenizer() override;
  // The splitters and the decoder point into this object's members.
  HfTokenizer(const HfTokenizer&) = delete;
  HfTokenizer& operator=(const HfTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  std::string kind() const override { return "tokenizer.json BPE"; }

 private:
  void encode_section(std::string_view text, size_t section_index, std::vector<int32_t>& out) const;
  void read_added_tokens(const ConfigNode& root);
  void read_post_processor(const ConfigNode& node);
  void apply_tokenizer_config(const std::filesystem::path& config_path);
  std::optional<int32_t> id_of(const std::string& token) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<AddedToken> added_;
  std::unordered_set<std::string> added_contents_;
  AddedTokenSplitter raw_splitter_, normalized_splitter_;
  std::vector<std::string> id_to_token_;
};

}  // namespace sarqc::tokenizer

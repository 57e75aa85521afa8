#include "sarqc/io/tokenizer.h"

#include <fmt/format.h>

#include "sarqc/io/tokenizer_config.h"
#include "sarqc/tokenizer/hf_tokenizer.h"
#include "sarqc/util/error.h"
#include "sarqc/util/utf8.h"
#include "sentencepiece_plugin.h"

namespace sarqc {
namespace fs = std::filesystem;

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const fs::path& model_dir)
      : model_(detail::create_sentencepiece_model()) {
    source_ = model_dir / "tokenizer.model";
    std::string error;
    if (!model_->load(source_.string(), &error))
      throw_bad_input(
          fmt::format("{}: cannot load sentencepiece model: {}", source_.string(), error));
    resolve_special_tokens(model_dir);
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    std::string error;
    if (!model_->encode(to_valid_utf8(text), &ids, &error))
      throw_bad_input(fmt::format("{}: cannot encode text: {}", source_.string(), error));
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    const int pieces = model_->piece_size();
    for (int32_t id : ids)
      if (id < 0 || id >= pieces)
        throw_bad_input(fmt::format("token id {} is outside the vocabulary of {} ({} pieces)", id,
                                    source_.string(), pieces));
    std::string text, error;
    if (!model_->decode(std::vector<int>(ids.begin(), ids.end()), &text, &error))
      throw_bad_input(fmt::format("{}: cannot decode: {}", source_.string(), error));
    return text;
  }

  int64_t vocab_size() const override { return model_->piece_size(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  // Token strings from tokenizer_config.json win over special_tokens_map.json, which wins over
  // the ids built into the sentencepiece model; a named token must exist in the vocabulary.
  void resolve_special_tokens(const fs::path& model_dir) {
    const TokenizerConfig config = read_tokenizer_config(model_dir);
    auto resolve = [&](const std::optional<NamedToken>& named, const char* key,
                       int builtin) -> std::optional<int32_t> {
      if (!named) return builtin >= 0 ? std::optional<int32_t>(builtin) : std::nullopt;
      const int id = model_->piece_to_id(named->text);
      if (id == model_->unk_id() && named->text != model_->id_to_piece(model_->unk_id()))
        throw_bad_input(fmt::format("{}: {} '{}' is not a piece of {}", named->file.string(), key,
                                    named->text, source_.string()));
      return id;
    };
    special_.bos_id = resolve(config.bos_token, "bos_token", model_->bos_id());
    special_.eos_id = resolve(config.eos_token, "eos_token", model_->eos_id());
    special_.unk_id = resolve(config.unk_token, "unk_token", model_->unk_id());
    // LlamaTokenizer's defaults: BOS on, EOS off.
    if (config.add_bos_token.value_or(true) && special_.bos_id)
      special_.prefix.push_back(*special_.bos_id);
    if (config.add_eos_token.value_or(false) && special_.eos_id)
      special_.suffix.push_back(*special_.eos_id);
  }

  std::unique_ptr<detail::SentencePieceModel> model_;
};

}  // namespace

std::vector<int32_t> Tokenizer::encode_with_specials(std::string_view text) const {
  std::vector<int32_t> ids = special_.prefix;
  const auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), special_.suffix.begin(), special_.suffix.end());
  return ids;
}

std::optional<fs::path> find_tokenizer_file(const fs::path& model_dir) {
  // tokenizer.json holds the whole pipeline (added tokens, normalizer, post-processor), so it
  // wins when a folder ships both, as in transformers' fast tokenizers.
  std::error_code ec;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const fs::path file = model_dir / name;
    if (fs::exists(file, ec)) return file;
  }
  return std::nullopt;
}

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& model_dir) {
  const auto file = find_tokenizer_file(model_dir);
  if (!file)
    throw_bad_input(
        fmt::format("{}: no tokenizer.json or tokenizer.model found", model_dir.string()));
  if (file->filename() == "tokenizer.json")
    return std::make_unique<tokenizer::HfTokenizer>(model_dir);
  return std::make_unique<SentencePieceTokenizer>(model_dir);
}

}  // namespace sarqc

#include "sarqc/io/tokenizer.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "sarqc/util/error.h"
#include "sarqc/util/json_file.h"
#include "sentencepiece_plugin.h"

namespace sarqc {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_optional_json(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return json::object();
  json j = read_json_file(path);
  if (!j.is_object()) throw_bad_input(fmt::format("{}: must be a JSON object", path.string()));
  return j;
}

// A special token is written either as a string or as an AddedToken object {"content": ...}.
std::optional<std::string> token_text(const json& j, const char* key, const fs::path& where) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const json& value = j[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  throw_bad_input(fmt::format("{}: '{}' must be a string or an object with 'content', got {}",
                              where.string(), key, value.dump()));
}

bool flag(const json& j, const char* key, bool fallback, const fs::path& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean())
    throw_bad_input(fmt::format("{}: '{}' must be true or false", where.string(), key));
  return j[key].get<bool>();
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const fs::path& model_dir)
      : model_(detail::create_sentencepiece_model()) {
    source_ = model_dir / "tokenizer.model";
    std::string error;
    if (!model_->load(source_.string(), &error))
      throw_bad_input(fmt::format("{}: cannot load sentencepiece model: {}", source_.string(),
                                  error));
    resolve_special_tokens(model_dir);
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    std::string error;
    if (!model_->encode(text, &ids, &error))
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
    const fs::path config_path = model_dir / "tokenizer_config.json";
    const fs::path map_path = model_dir / "special_tokens_map.json";
    const json config = read_optional_json(config_path);
    const json special_map = read_optional_json(map_path);

    auto resolve = [&](const char* key, int builtin) -> std::optional<int32_t> {
      std::optional<std::string> text = token_text(config, key, config_path);
      fs::path where = config_path;
      if (!text) {
        text = token_text(special_map, key, map_path);
        where = map_path;
      }
      if (!text) return builtin >= 0 ? std::optional<int32_t>(builtin) : std::nullopt;
      const int id = model_->piece_to_id(*text);
      if (id == model_->unk_id() && *text != model_->id_to_piece(model_->unk_id()))
        throw_bad_input(fmt::format("{}: {} '{}' is not a piece of {}", where.string(), key,
                                    *text, source_.string()));
      return id;
    };
    special_.bos_id = resolve("bos_token", model_->bos_id());
    special_.eos_id = resolve("eos_token", model_->eos_id());
    special_.unk_id = resolve("unk_token", model_->unk_id());
    // LlamaTokenizer's defaults: BOS on, EOS off.
    special_.add_bos = flag(config, "add_bos_token", true, config_path) && special_.bos_id;
    special_.add_eos = flag(config, "add_eos_token", false, config_path) && special_.eos_id;
  }

  std::unique_ptr<detail::SentencePieceModel> model_;
};

}  // namespace

std::vector<int32_t> Tokenizer::encode_with_specials(std::string_view text) const {
  std::vector<int32_t> ids;
  if (special_.add_bos) ids.push_back(*special_.bos_id);
  const auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (special_.add_eos) ids.push_back(*special_.eos_id);
  return ids;
}

std::optional<fs::path> find_tokenizer_file(const fs::path& model_dir) {
  // tokenizer.model is preferred while it is the only format this version can read.
  std::error_code ec;
  const fs::path sp = model_dir / "tokenizer.model";
  if (fs::exists(sp, ec)) return sp;
  const fs::path hf = model_dir / "tokenizer.json";
  if (fs::exists(hf, ec)) return hf;
  return std::nullopt;
}

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& model_dir) {
  const auto file = find_tokenizer_file(model_dir);
  if (!file)
    throw_bad_input(fmt::format("{}: no tokenizer.model or tokenizer.json found",
                                model_dir.string()));
  if (file->filename() == "tokenizer.json")
    throw Error(ErrorKind::NotImplemented,
                fmt::format("{}: tokenizer.json is not supported in this version (only "
                            "sentencepiece tokenizer.model)",
                            file->string()));
  return std::make_unique<SentencePieceTokenizer>(model_dir);
}

}  // namespace sarqc

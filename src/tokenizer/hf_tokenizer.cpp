#include "sarqc/tokenizer/hf_tokenizer.h"

#include <fmt/format.h>

#include "sarqc/io/tokenizer_config.h"
#include "sarqc/util/error.h"
#include "sarqc/util/json_file.h"
#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {
namespace fs = std::filesystem;

HfTokenizer::~HfTokenizer() = default;

HfTokenizer::HfTokenizer(const fs::path& model_dir) {
  source_ = model_dir / "tokenizer.json";
  const nlohmann::json json = read_json_file(source_);
  const ConfigNode root(json, source_.string());
  if (!json.is_object()) root.fail("must be a JSON object");

  const ConfigNode model = root.child("model").typed();
  if (model.type() != "BPE")
    model.fail(fmt::format("unsupported model type '{}' (supported: BPE)", model.type()));
  model_ = std::make_unique<BpeModel>(model);
  id_to_token_ = model_->tokens();

  // A missing component is no component, like null (the reference requires the keys).
  normalizer_ = make_normalizer(root.child_or_null("normalizer"));
  pre_tokenizer_ = make_pre_tokenizer(root.child_or_null("pre_tokenizer"));
  read_added_tokens(root);
  decoder_ = make_decoder(root.child_or_null("decoder"), added_contents_);
  special_.unk_id = model_->unk_id();
  read_post_processor(root.child_or_null("post_processor"));
  apply_tokenizer_config(model_dir);
}

void HfTokenizer::read_added_tokens(const ConfigNode& root) {
  if (!root.has("added_tokens")) return;
  for (const ConfigNode& item : root.array("added_tokens")) {
    AddedToken t;
    t.content = item.string("content");
    if (t.content.empty() || !is_valid_utf8(t.content))
      item.child("content").fail("must be a non-empty UTF-8 string");
    const int64_t id = item.integer("id");
    if (id < 0 || id > kMaxTokenId)
      item.child("id").fail(fmt::format("must be in [0, {}], got {}", kMaxTokenId, id));
    t.id = static_cast<int32_t>(id);
    t.special = item.boolean_or("special", false);
    t.lstrip = item.boolean_or("lstrip", false);
    t.rstrip = item.boolean_or("rstrip", false);
    t.normalized = item.boolean_or("normalized", !t.special);
    added_.push_back(std::move(t));
  }
  std::vector<const AddedToken*> raw, normalized;
  std::vector<std::string> raw_text, normalized_text;
  for (const AddedToken& t : added_) {
    if (static_cast<size_t>(t.id) >= id_to_token_.size()) id_to_token_.resize(t.id + 1);
    id_to_token_[t.id] = t.content;
    added_contents_.insert(t.content);
    if (t.normalized && normalizer_) {
      normalized.push_back(&t);
      normalized_text.push_back(normalizer_->normalize(t.content));
    } else {
      raw.push_back(&t);
      raw_text.push_back(t.content);
    }
  }
  raw_splitter_ = AddedTokenSplitter(std::move(raw), std::move(raw_text));
  normalized_splitter_ = AddedTokenSplitter(std::move(normalized), std::move(normalized_text));
}

std::optional<int32_t> HfTokenizer::id_of(const std::string& token) const {
  for (const AddedToken& t : added_)
    if (t.content == token) return t.id;
  return model_->token_id(token);
}

void HfTokenizer::read_post_processor(const ConfigNode& config) {
  if (config.is_null()) return;
  const ConfigNode node = config.typed();
  const std::string type = node.type();
  if (type == "ByteLevel") return;  // only offsets change; ids do not
  if (type == "Sequence") {
    for (const ConfigNode& item : node.array("processors")) read_post_processor(item);
    return;
  }
  if (type == "TemplateProcessing") {
    const ConfigNode specials = node.child("special_tokens");
    auto ids_of = [&](const ConfigNode& item) {
      const std::string name = item.string("id");
      std::vector<int32_t> ids;
      if (specials.has(name.c_str())) {
        const ConfigNode entry = specials.child(name.c_str());
        for (const ConfigNode& id : entry.array("ids")) {
          if (!id.value().is_number_integer() || id.value().get<int64_t>() < 0)
            id.fail("must be a non-negative token id");
          ids.push_back(static_cast<int32_t>(id.value().get<int64_t>()));
        }
      } else if (auto id = id_of(name)) {
        ids.push_back(*id);
      } else {
        item.fail(fmt::format("special token '{}' is neither in special_tokens nor a token", name));
      }
      return ids;
    };
    std::vector<int32_t> prefix, suffix;
    bool seen_sequence = false;
    for (const ConfigNode& item : node.array("single")) {
      if (item.has("Sequence")) {
        if (seen_sequence) item.fail("the single template must hold one sequence");
        seen_sequence = true;
      } else if (item.has("SpecialToken")) {
        const auto ids = ids_of(item.child("SpecialToken"));
        std::vector<int32_t>& side = seen_sequence ? suffix : prefix;
        side.insert(side.end(), ids.begin(), ids.end());
      } else {
        item.fail("must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    if (!seen_sequence) node.child("single").fail("the single template has no sequence ($A)");
    special_.prefix = std::move(prefix);
    special_.suffix = std::move(suffix);
    return;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto id_at = [&](const char* key) {
      const ConfigNode pair = node.child(key);
      if (!pair.value().is_array() || pair.value().size() != 2 ||
          !pair.value()[1].is_number_integer())
        pair.fail("must be [token, id]");
      return static_cast<int32_t>(pair.value()[1].get<int64_t>());
    };
    special_.prefix = {id_at("cls")};
    special_.suffix = {id_at("sep")};
    return;
  }
  node.fail(
      fmt::format("unsupported post-processor type '{}' (supported: TemplateProcessing, "
                  "ByteLevel, BertProcessing, RobertaProcessing, Sequence)",
                  type));
}

// transformers lets tokenizer_config.json's add_bos_token / add_eos_token override the template
// (LlamaTokenizerFast rebuilds its post-processor from them); the token strings come from there.
void HfTokenizer::apply_tokenizer_config(const fs::path& model_dir) {
  const TokenizerConfig config = read_tokenizer_config(model_dir);
  auto resolve = [&](const std::optional<NamedToken>& named, const char* key) {
    std::optional<int32_t> id;
    if (!named) return id;
    id = id_of(named->text);
    if (!id)
      throw_bad_input(fmt::format("{}: {} '{}' is not a token of {}", named->file.string(), key,
                                  named->text, source_.string()));
    return id;
  };
  special_.bos_id = resolve(config.bos_token, "bos_token");
  special_.eos_id = resolve(config.eos_token, "eos_token");
  if (config.unk_token) special_.unk_id = resolve(config.unk_token, "unk_token");
  auto override_with = [&](const std::optional<bool>& add, const std::optional<int32_t>& id,
                           const char* flag, const char* token, std::vector<int32_t>& ids) {
    if (!add) return;
    if (*add && !id)
      throw_bad_input(fmt::format("{}: {} is true but no {} is named", config.config_path.string(),
                                  flag, token));
    ids = *add ? std::vector<int32_t>{*id} : std::vector<int32_t>{};
  };
  override_with(config.add_bos_token, special_.bos_id, "add_bos_token", "bos_token",
                special_.prefix);
  override_with(config.add_eos_token, special_.eos_id, "add_eos_token", "eos_token",
                special_.suffix);
}

std::vector<int32_t> HfTokenizer::encode(std::string_view input) const {
  const std::string text = to_valid_utf8(input);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  const std::vector<Section> sections = raw_splitter_.split(text);
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].token)
      ids.push_back(sections[i].token->id);
    else
      encode_section(sections[i].text, i, ids);
  }
  return ids;
}

void HfTokenizer::encode_section(std::string_view section, size_t section_index,
                                 std::vector<int32_t>& out) const {
  if (section.empty()) return;
  const std::string normalized =
      normalizer_ ? normalizer_->normalize(std::string(section)) : std::string(section);
  for (const Section& sub : normalized_splitter_.split(normalized)) {
    if (sub.token) {
      out.push_back(sub.token->id);
      continue;
    }
    if (sub.text.empty()) continue;
    std::vector<std::string> pieces{std::string(sub.text)};
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces, section_index);
    model_->encode(pieces, out);
  }
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || id_to_token_[id].empty())
      throw_bad_input(fmt::format("token id {} is not in the vocabulary of {} ({} ids)", id,
                                  source_.string(), id_to_token_.size()));
    tokens.push_back(id_to_token_[id]);
  }
  if (!decoder_) {
    std::string text;
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
    return text;
  }
  std::string text;
  for (const std::string& part : decoder_->decode_chain(std::move(tokens))) text += part;
  return text;
}

}  // namespace sarqc::tokenizer

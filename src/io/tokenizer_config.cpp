#include "sarqc/io/tokenizer_config.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "sarqc/util/error.h"
#include "sarqc/util/json_file.h"

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

std::optional<bool> flag(const json& j, const char* key, const fs::path& where) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (!j[key].is_boolean())
    throw_bad_input(fmt::format("{}: '{}' must be true or false", where.string(), key));
  return j[key].get<bool>();
}

}  // namespace

TokenizerConfig read_tokenizer_config(const fs::path& model_dir) {
  TokenizerConfig c;
  c.config_path = model_dir / "tokenizer_config.json";
  const fs::path map_path = model_dir / "special_tokens_map.json";
  const json config = read_optional_json(c.config_path);
  const json special_map = read_optional_json(map_path);
  auto named = [&](const char* key) -> std::optional<NamedToken> {
    if (auto text = token_text(config, key, c.config_path)) return NamedToken{*text, c.config_path};
    if (auto text = token_text(special_map, key, map_path)) return NamedToken{*text, map_path};
    return std::nullopt;
  };
  c.bos_token = named("bos_token");
  c.eos_token = named("eos_token");
  c.unk_token = named("unk_token");
  c.add_bos_token = flag(config, "add_bos_token", c.config_path);
  c.add_eos_token = flag(config, "add_eos_token", c.config_path);
  return c;
}

}  // namespace sarqc

#pragma once
// The special-token settings of a model folder, from tokenizer_config.json with
// special_tokens_map.json as the fallback for the token strings (as transformers reads them).
#include <filesystem>
#include <optional>
#include <string>

namespace sarqc {

struct NamedToken {
  std::string text;
  std::filesystem::path file;  // where it was named, for error messages
};

struct TokenizerConfig {
  std::optional<NamedToken> bos_token, eos_token, unk_token;
  std::optional<bool> add_bos_token, add_eos_token;
  std::filesystem::path config_path;
};

// Missing files are empty settings; malformed ones are bad-input errors naming the file and key.
TokenizerConfig read_tokenizer_config(const std::filesystem::path& model_dir);

}  // namespace sarqc

#pragma once
// `sarqc tokenize`: the ids the model's tokenizer gives a whole text file, as calibration and
// evaluation see them.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sarqc {

struct TokenizeOptions {
  std::filesystem::path model_dir;  // only the tokenizer files are read
  std::filesystem::path input;      // "-" reads standard input
  bool add_special = false;         // add what the post-processor puts around a sequence
};

struct TokenizeResult {
  std::string tokenizer_kind;
  std::filesystem::path tokenizer_file;
  uint64_t bytes = 0;
  bool add_special = false;
  std::vector<int32_t> ids;
};

TokenizeResult tokenize_file(const TokenizeOptions& options);
nlohmann::json to_json(const TokenizeResult& result);
// The ids separated by spaces, one line.
std::string to_text(const TokenizeResult& result);

}  // namespace sarqc

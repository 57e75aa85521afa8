#pragma once
// One component of tokenizer.json (the model, a normalizer, a pre-tokenizer...) with the path
// that names it in error messages, e.g. "/m/tokenizer.json: pre_tokenizer.pretokenizers[0]
// (Split)".
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sarqc/tokenizer/pattern.h"

namespace sarqc::tokenizer {

class ConfigNode {
 public:
  // The whole file; `file` names it.
  ConfigNode(const nlohmann::json& value, std::string file);

  const nlohmann::json& value() const { return *value_; }
  const std::string& where() const { return where_; }
  bool is_null() const { return value_->is_null(); }

  // The "type" field; the returned node's name ends with " (Type)".
  std::string type() const;
  ConfigNode typed() const;

  bool has(const char* key) const;                       // present and not null
  ConfigNode child(const char* key) const;               // required
  ConfigNode child_or_null(const char* key) const;       // a null node when absent
  std::vector<ConfigNode> array(const char* key) const;  // required array
  std::string string(const char* key) const;             // required string
  std::string string_or(const char* key, const std::string& fallback) const;
  bool boolean_or(const char* key, bool fallback) const;
  int64_t integer(const char* key) const;

  [[noreturn]] void fail(const std::string& message) const;

 private:
  ConfigNode(const nlohmann::json& value, std::string where, bool root);
  std::string name_of(const char* key) const;

  const nlohmann::json* value_;
  std::string where_;
  bool root_;
};

// A {"Regex": "..."} or {"String": "..."} pattern object.
Pattern read_pattern(const ConfigNode& node);

}  // namespace sarqc::tokenizer

#pragma once
// tokenizer.json "normalizer": rewrites a text section before pre-tokenization.
#include <memory>
#include <string>

#include "sarqc/tokenizer/config_node.h"

namespace sarqc::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8 and the result is too.
  virtual std::string normalize(std::string text) const = 0;
};

// nullptr for a JSON null. Supported: NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip,
// Replace, Prepend, Sequence; any other type is a bad-input error naming the component.
std::unique_ptr<Normalizer> make_normalizer(const ConfigNode& config);

}  // namespace sarqc::tokenizer

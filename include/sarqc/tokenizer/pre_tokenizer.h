#pragma once
// tokenizer.json "pre_tokenizer": splits a normalized section into the pieces the model encodes
// separately (BPE merges never cross a piece boundary).
#include <memory>
#include <string>
#include <vector>

#include "sarqc/tokenizer/config_node.h"

namespace sarqc::tokenizer {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their split. `section_index` is the position of the text section among
  // the sections the added tokens cut the input into (Metaspace's prepend_scheme "first").
  virtual void pre_tokenize(std::vector<std::string>& pieces, size_t section_index) const = 0;
};

// nullptr for a JSON null. Supported: Split (every behavior, invert), ByteLevel,
// Metaspace, Digits, Sequence; anything else is a bad-input error naming the component.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const ConfigNode& config);

}  // namespace sarqc::tokenizer

#pragma once
// tokenizer.json "decoder": turns the token strings of a sequence back into text.
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "sarqc/tokenizer/config_node.h"

namespace sarqc::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // One step of the chain: token strings in, (fewer or rewritten) strings out.
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};

// nullptr for a JSON null. `added_tokens` are passed through ByteLevel untouched. Supported:
// ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence.
std::unique_ptr<Decoder> make_decoder(const ConfigNode& config,
                                      const std::unordered_set<std::string>& added_tokens);

}  // namespace sarqc::tokenizer

#pragma once
// tokenizer.json "added_tokens": strings matched in the text before the model sees it, so that
// "<|im_start|>" is one id and never BPE pieces. At each position the longest token wins.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sarqc::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false;      // swallow whitespace before it
  bool rstrip = false;      // swallow whitespace after it
  bool normalized = false;  // matched in the normalized text rather than the raw text
};

struct Section {
  std::string_view text;
  const AddedToken* token = nullptr;  // set when the section is this added token
};

class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;
  // `tokens` must outlive the splitter; the content compared is `match_text[i]`.
  AddedTokenSplitter(std::vector<const AddedToken*> tokens, std::vector<std::string> match_text);

  // Cuts `text` into text and added-token sections, then applies lstrip/rstrip to the text next
  // to each token; sections may come back empty.
  std::vector<Section> split(std::string_view text) const;
  bool empty() const { return candidates_.empty(); }

 private:
  struct Candidate {
    std::string text;
    const AddedToken* token;
  };
  std::vector<Candidate> candidates_;                       // longest first
  std::array<std::vector<uint32_t>, 256> by_first_byte_{};  // indices into candidates_
};

}  // namespace sarqc::tokenizer

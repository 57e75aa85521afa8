#include "sarqc/tokenizer/added_tokens.h"

#include <algorithm>
#include <unordered_set>

#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {

AddedTokenSplitter::AddedTokenSplitter(std::vector<const AddedToken*> tokens,
                                       std::vector<std::string> match_text) {
  // When two tokens share a text the later one wins, as in the reference's content -> token map.
  std::unordered_set<std::string> seen;
  for (size_t i = tokens.size(); i-- > 0;)
    if (!match_text[i].empty() && seen.insert(match_text[i]).second)
      candidates_.push_back({std::move(match_text[i]), tokens[i]});
  std::stable_sort(
      candidates_.begin(), candidates_.end(),
      [](const Candidate& a, const Candidate& b) { return a.text.size() > b.text.size(); });
  for (size_t i = 0; i < candidates_.size(); ++i)
    by_first_byte_[static_cast<unsigned char>(candidates_[i].text[0])].push_back(
        static_cast<uint32_t>(i));
}

std::vector<Section> AddedTokenSplitter::split(std::string_view text) const {
  std::vector<Section> sections;
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const Candidate* found = nullptr;
    for (uint32_t c : by_first_byte_[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, candidates_[c].text.size(), candidates_[c].text) == 0) {
        found = &candidates_[c];
        break;
      }
    }
    if (!found) {
      ++i;
      continue;
    }
    if (i > start) sections.push_back({text.substr(start, i - start), nullptr});
    sections.push_back({text.substr(i, found->text.size()), found->token});
    i += found->text.size();
    start = i;
  }
  if (start < text.size()) sections.push_back({text.substr(start), nullptr});

  for (size_t i = 0; i < sections.size(); ++i) {
    const AddedToken* token = sections[i].token;
    if (!token) continue;
    if (token->lstrip && i > 0 && !sections[i - 1].token)
      sections[i - 1].text = trim_js_whitespace_right(sections[i - 1].text);
    if (token->rstrip && i + 1 < sections.size() && !sections[i + 1].token)
      sections[i + 1].text = trim_js_whitespace_left(sections[i + 1].text);
  }
  return sections;
}

}  // namespace sarqc::tokenizer

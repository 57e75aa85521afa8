#pragma once
// Regular expressions of tokenizer.json (Split pre-tokenizers, Replace normalizers and decoders).
// HF tokenizers compiles them with Oniguruma; we compile them with PCRE2 after rewriting the few
// constructs whose meaning differs between the two engines (see oniguruma_to_pcre2). Matching is
// left to right and non-overlapping, and after an empty match the search resumes one code point
// later, as HF tokenizers finds matches.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sarqc::tokenizer {

// The PCRE2 source with Oniguruma's meaning of `pattern`:
//  - \s \S \d \D \w \W \b \B use Unicode properties (White_Space, Nd, Alphabetic...), not PCRE2's
//    UCP sets (which add U+180E to \s, for one);
//  - \h \H are hex digits, \v is U+000B, \uHHHH a code point;
//  - . excludes only \n; ^ and $ are line anchors;
//  - (?i:...) folds with Unicode case folding, as Oniguruma does ('ſ' matches 's');
//  - X{n,m}+ repeats the interval (Ruby syntax), it is not possessive.
// Throws std::invalid_argument naming the construct for what cannot be translated (nested
// character classes, && intersections, inline options other than (?i:...)).
std::string oniguruma_to_pcre2(std::string_view pattern);

struct Match {
  size_t begin = 0, end = 0;  // byte offsets
};

class Pattern {
 public:
  // `where` names the tokenizer.json component for error messages.
  static Pattern regex(std::string_view oniguruma_source, const std::string& where);
  static Pattern literal(std::string_view text, const std::string& where);
  // A pattern already in PCRE2 syntax (our own, not from a file).
  static Pattern pcre2(const std::string& source, const std::string& where);

  // All matches in valid UTF-8 `text`.
  std::vector<Match> find_all(std::string_view text) const;
  // `text` with every match replaced by `replacement` (taken literally).
  std::string replace_all(std::string_view text, std::string_view replacement) const;

  Pattern(Pattern&&) noexcept;
  Pattern& operator=(Pattern&&) noexcept;
  ~Pattern();

 private:
  struct Compiled;
  explicit Pattern(std::unique_ptr<Compiled> compiled);
  std::unique_ptr<Compiled> compiled_;
};

}  // namespace sarqc::tokenizer

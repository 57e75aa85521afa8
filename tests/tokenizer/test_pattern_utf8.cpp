// The Oniguruma -> PCRE2 rewrite, match iteration, and UTF-8 repair (the Unicode Standard's
// "U+FFFD substitution of maximal subparts", which WHATWG's decoder implements).
#include <gtest/gtest.h>

#include "sarqc/tokenizer/pattern.h"
#include "sarqc/util/utf8.h"
#include "test_support.h"

namespace sarqc {
namespace {

using tokenizer::Match;
using tokenizer::oniguruma_to_pcre2;
using tokenizer::Pattern;

std::vector<std::pair<size_t, size_t>> spans(const std::string& regex, const std::string& text) {
  std::vector<std::pair<size_t, size_t>> out;
  for (const Match& m : Pattern::regex(regex, "test").find_all(text))
    out.emplace_back(m.begin, m.end);
  return out;
}
using Spans = std::vector<std::pair<size_t, size_t>>;

TEST(OnigurumaToPcre2, RewritesWhatDiffers) {
  EXPECT_EQ(oniguruma_to_pcre2(R"(\s+(?!\S))"), R"(\p{White_Space}+(?!\P{White_Space}))");
  EXPECT_EQ(oniguruma_to_pcre2(R"([^\s\p{L}\p{N}])"), R"([^\p{White_Space}\p{L}\p{N}])");
  EXPECT_EQ(oniguruma_to_pcre2("(?i:'s|'t)"), "(?i:'s|'t)");  // both engines fold Unicode
  EXPECT_EQ(oniguruma_to_pcre2("a{1,2}+"), "(?:a{1,2})+");
  EXPECT_EQ(oniguruma_to_pcre2("a{,2}"), "a{0,2}");
  EXPECT_EQ(oniguruma_to_pcre2("."), "[^\\n]");
  EXPECT_EQ(oniguruma_to_pcre2(R"(\h\v\u00e9)"), R"([0-9A-Fa-f]\x0B\x{00e9})");
  EXPECT_EQ(oniguruma_to_pcre2(R"(\p{L}++)"), R"(\p{L}++)");  // possessive in both engines
  EXPECT_EQ(oniguruma_to_pcre2("x{y}"), "x\\{y\\}");          // not a quantifier
  EXPECT_THROW(oniguruma_to_pcre2("(?m:a)"), std::invalid_argument);
  EXPECT_THROW(oniguruma_to_pcre2("[a&&b]"), std::invalid_argument);
}

TEST(Pattern, MatchesAsTheTokenizerRegexesMean) {
  // GPT-2's "\s+(?!\S)" leaves the last space of a run to the next word.
  EXPECT_EQ(spans(R"(\s+(?!\S))", "a   b"), (Spans{{1, 3}}));
  EXPECT_EQ(spans(R"(\p{N}{1,3})", "12345"), (Spans{{0, 3}, {3, 5}}));
  // Unicode case folding, as HF tokenizers' Oniguruma: the long s (U+017F) is 's', the Kelvin
  // sign (U+212A) is 'k'.
  EXPECT_EQ(spans("(?i:'s)", "'S '\xC5\xBF 's"), (Spans{{0, 2}, {3, 6}, {7, 9}}));
  EXPECT_EQ(spans("(?i:k)", "\xE2\x84\xAA"), (Spans{{0, 3}}));
  // Ruby's X{n}+ repeats the interval: one match, not two possessive ones.
  EXPECT_EQ(spans("a{2}+", "aaaaa"), (Spans{{0, 4}}));
  // \s is White_Space: U+0085 is, U+180E (PCRE2's \h) and U+FEFF are not.
  EXPECT_EQ(spans(R"(\s)", "\xC2\x85"), (Spans{{0, 2}}));
  EXPECT_EQ(spans(R"(\s)", "\xE1\xA0\x8E\xEF\xBB\xBF"), Spans{});
  // \b between word (Alphabetic, marks, digits) and non-word characters.
  EXPECT_EQ(spans(R"(\bab\b)", "ab xab ab_ ab"), (Spans{{0, 2}, {11, 13}}));
  EXPECT_EQ(spans(R"(\Bb)", "ab b"), (Spans{{1, 2}}));
  // After an empty match the search moves on by one code point.
  EXPECT_EQ(spans("x*", "a\xC3\xA9"), (Spans{{0, 0}, {1, 1}, {3, 3}}));
  EXPECT_EQ(Pattern::literal(" ", "test").replace_all("a b  c", "_"), "a_b__c");
  test::expect_bad_input([] { Pattern::regex("(", "tokenizer.json: x"); },
                         "tokenizer.json: x: regex \"(\" is not supported: missing ')'");
}

TEST(Utf8, MaximalSubpartsBecomeOneReplacementEach) {
  const std::string r = "\xEF\xBF\xBD";
  // The example of the Unicode Standard, chapter 3 (U+FFFD substitution of maximal subparts).
  EXPECT_EQ(to_valid_utf8("\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64"),
            "a" + r + r + r + "b" + r + "c" + r + r + "d");
  EXPECT_EQ(to_valid_utf8("\xC0\xAF"), r + r);                  // overlong
  EXPECT_EQ(to_valid_utf8("\xED\xA0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(to_valid_utf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(to_valid_utf8("x\xF0\x9F\x98"), "x" + r);           // truncated at the end
  const std::string valid = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80";
  EXPECT_TRUE(is_valid_utf8(valid));
  EXPECT_EQ(to_valid_utf8(valid), valid);
  EXPECT_FALSE(is_valid_utf8("\xC3"));
  EXPECT_EQ(trim_js_whitespace_left("\xEF\xBB\xBF \t\xC2\xA0x "), "x ");
  EXPECT_EQ(trim_js_whitespace_right(" x\xE3\x80\x80\n"), " x");
}

}  // namespace
}  // namespace sarqc

#include "sarqc/tokenizer/normalizer.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "sarqc/util/error.h"
#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {
namespace {

bool is_ascii(const std::string& text) {
  for (char c : text)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(utf8proc_option_t options) : options_(options) {}
  std::string normalize(std::string text) const override {
    if (is_ascii(text)) return text;  // ASCII is invariant under every normalization form
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                     static_cast<utf8proc_ssize_t>(text.size()), &out, options_);
    if (n < 0) throw_runtime(fmt::format("Unicode normalization failed: {}", utf8proc_errmsg(n)));
    std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
    return result;
  }

 private:
  utf8proc_option_t options_;
};

// Unicode's Cased and Case_Ignorable properties, as far as the final-sigma rule needs them.
bool is_cased(char32_t cp) {
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

bool is_case_ignorable(char32_t cp) {
  switch (cp) {  // Word_Break MidLetter, MidNumLet and Single_Quote
    case 0x27: case 0x2E: case 0x3A: case 0xB7: case 0x387: case 0x5F4: case 0x2018:
    case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55: case 0xFF07:
    case 0xFF0E: case 0xFF1A:
      return true;
    default:
      break;
  }
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_CF ||
         c == UTF8PROC_CATEGORY_LM || c == UTF8PROC_CATEGORY_SK;
}

// JavaScript's toLowerCase: per code point lowercasing plus SpecialCasing's context-free U+0130
// -> "i̇" and the Final_Sigma rule (Σ at the end of a word becomes ς).
class Lowercase final : public Normalizer {
 public:
  std::string normalize(std::string text) const override {
    std::vector<char32_t> cps;
    for (size_t pos = 0; pos < text.size();) cps.push_back(next_code_point(text, pos));
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < cps.size(); ++i) {
      const char32_t cp = cps[i];
      if (cp == 0x130) {
        out += "i\xCC\x87";
      } else if (cp == 0x3A3) {
        append_utf8(out, final_sigma(cps, i) ? 0x3C2 : 0x3C3);
      } else {
        append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
      }
    }
    return out;
  }

 private:
  static bool final_sigma(const std::vector<char32_t>& cps, size_t i) {
    size_t before = i;
    while (before > 0 && is_case_ignorable(cps[before - 1])) --before;
    if (before == 0 || !is_cased(cps[before - 1])) return false;
    size_t after = i + 1;
    while (after < cps.size() && is_case_ignorable(cps[after])) ++after;
    return after == cps.size() || !is_cased(cps[after]);
  }
};

class StripAccents final : public Normalizer {
 public:
  std::string normalize(std::string text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      const size_t start = pos;
      const char32_t cp = next_code_point(text, pos);
      const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
      if (category == UTF8PROC_CATEGORY_MN || category == UTF8PROC_CATEGORY_MC ||
          category == UTF8PROC_CATEGORY_ME)
        continue;
      out.append(text, start, pos - start);
    }
    return out;
  }
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string text) const override {
    std::string_view view = text;
    if (left_) view = trim_js_whitespace_left(view);
    if (right_) view = trim_js_whitespace_right(view);
    return std::string(view);
  }

 private:
  bool left_, right_;
};

class Replace final : public Normalizer {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string text) const override {
    return pattern_.replace_all(text, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// The reference prepends to every section, even one that already starts with the prefix.
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string text) const override { return prefix_ + text; }

 private:
  std::string prefix_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string normalize(std::string text) const override {
    for (const auto& step : steps_)
      if (step) text = step->normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const ConfigNode& config) {
  if (config.is_null()) return nullptr;
  const ConfigNode node = config.typed();
  const std::string type = node.type();
  const auto stable = static_cast<utf8proc_option_t>(UTF8PROC_STABLE);
  if (type == "NFC")
    return std::make_unique<UnicodeForm>(static_cast<utf8proc_option_t>(stable | UTF8PROC_COMPOSE));
  if (type == "NFD")
    return std::make_unique<UnicodeForm>(
        static_cast<utf8proc_option_t>(stable | UTF8PROC_DECOMPOSE));
  if (type == "NFKC")
    return std::make_unique<UnicodeForm>(
        static_cast<utf8proc_option_t>(stable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  if (type == "NFKD")
    return std::make_unique<UnicodeForm>(
        static_cast<utf8proc_option_t>(stable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Strip")
    return std::make_unique<Strip>(node.boolean_or("strip_left", false),
                                   node.boolean_or("strip_right", false));
  if (type == "Replace")
    return std::make_unique<Replace>(read_pattern(node.child("pattern")),
                                     node.string_or("content", ""));
  if (type == "Prepend") return std::make_unique<Prepend>(node.string("prepend"));
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const ConfigNode& item : node.array("normalizers")) steps.push_back(make_normalizer(item));
    return std::make_unique<Sequence>(std::move(steps));
  }
  node.fail(
      fmt::format("unsupported normalizer type '{}' (supported: NFC, NFD, NFKC, NFKD, "
                  "Lowercase, StripAccents, Strip, Replace, Prepend, Sequence)",
                  type));
}

}  // namespace sarqc::tokenizer

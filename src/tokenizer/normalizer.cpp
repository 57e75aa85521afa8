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

// HF tokenizers' Lowercase: Rust's char::to_lowercase code point by code point, so U+0130
// becomes "i̇" (SpecialCasing's unconditional mapping) and Σ is always σ (no Final_Sigma
// context, unlike JavaScript's toLowerCase).
class Lowercase final : public Normalizer {
 public:
  std::string normalize(std::string text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      const char32_t cp = next_code_point(text, pos);
      if (cp == 0x130)
        out += "i\xCC\x87";
      else
        append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    }
    return out;
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

// HF tokenizers prepends to every section, even one that already starts with the prefix.
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

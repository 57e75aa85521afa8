#include "sarqc/tokenizer/pattern.h"

#include <fmt/format.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

// PCRE2's header needs the code unit width first.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "sarqc/util/error.h"
#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {
namespace {

// Oniguruma's Unicode word characters (what the reference uses for \w and \b).
constexpr const char* kWordInClass = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}";
const std::string kWordChars = std::string(kWordInClass) + "\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}";
const std::string kWordClass = "[" + kWordChars + "]";
const std::string kNonWordClass = "[^" + kWordChars + "]";

// What Oniguruma's escape \c means, as PCRE2 source; nullopt when PCRE2 reads it the same way.
// Inside a character class only set members can be produced.
std::optional<std::string> translate_escape(char c, bool in_class) {
  const auto boundary = [](const char* before, const char* after) {
    return fmt::format("(?:(?<!{0}){1}{0})|(?<={0}){2}{0}))", kWordClass, before, after);
  };
  switch (c) {
    case 's':
      return std::string("\\p{White_Space}");
    case 'S':
      return std::string("\\P{White_Space}");
    case 'd':
      return std::string("\\p{Nd}");
    case 'D':
      return std::string("\\P{Nd}");
    case 'v':
      return std::string("\\x0B");
    case 'w':
      return in_class ? std::string(kWordInClass) : kWordClass;
    case 'h':
      return std::string(in_class ? "0-9A-Fa-f" : "[0-9A-Fa-f]");
    default:
      break;
  }
  if (in_class) {
    if (c == 'W' || c == 'H')
      throw std::invalid_argument(fmt::format("\\{} inside a character class is not supported", c));
    return std::nullopt;
  }
  switch (c) {
    case 'W':
      return kNonWordClass;
    case 'H':
      return std::string("[^0-9A-Fa-f]");
    case 'b':
      return boundary("(?=", "(?!");
    case 'B':
      return boundary("(?!", "(?=");
    default:
      return std::nullopt;
  }
}

// \uHHHH -> \x{HHHH}; returns how many bytes of `p` (starting at the backslash) it used, or 0.
size_t braced_or_u_escape(std::string_view p, std::string& out) {
  if (p.size() >= 3 && (p[1] == 'p' || p[1] == 'P' || p[1] == 'x') && p[2] == '{') {
    const size_t close = p.find('}', 3);
    if (close == std::string_view::npos)
      throw std::invalid_argument(fmt::format("unterminated \\{}{{", p[1]));
    const std::string_view body = p.substr(3, close - 3);
    if (p[1] != 'x' && body == "Word")
      out += p[1] == 'p' ? kWordClass : kNonWordClass;
    else
      out += p.substr(0, close + 1);
    return close + 1;
  }
  if (p.size() >= 6 && p[1] == 'u') {
    for (size_t i = 2; i < 6; ++i)
      if (!std::isxdigit(static_cast<unsigned char>(p[i])))
        throw std::invalid_argument("\\u must be followed by four hex digits");
    out += "\\x{" + std::string(p.substr(2, 4)) + "}";
    return 6;
  }
  return 0;
}

// Copies the character class starting at p[0] == '[' and returns its length in `p`.
size_t translate_class(std::string_view p, std::string& out) {
  std::string body;
  size_t i = 1;
  if (i < p.size() && p[i] == '^') body += p[i++];
  if (i < p.size() && p[i] == ']') body += "\\]", ++i;  // a leading ']' is literal
  for (; i < p.size(); ++i) {
    const char c = p[i];
    if (c == ']') {
      out += "[" + body + "]";
      return i + 1;
    }
    if (c == '\\') {
      if (i + 1 >= p.size()) break;
      if (const size_t used = braced_or_u_escape(p.substr(i), body)) {
        i += used - 1;
        continue;
      }
      if (auto r = translate_escape(p[i + 1], /*in_class=*/true)) {
        body += *r;
      } else {
        body += p.substr(i, 2);
      }
      ++i;
      continue;
    }
    if (c == '[') {
      const size_t close = p.find(":]", i);
      if (p.substr(i, 2) == "[:" && close != std::string_view::npos) {
        body += p.substr(i, close + 2 - i);  // POSIX class, same syntax in PCRE2
        i = close + 1;
        continue;
      }
      throw std::invalid_argument("nested character classes are not supported");
    }
    if (c == '&' && i + 1 < p.size() && p[i + 1] == '&')
      throw std::invalid_argument("character-class intersection (&&) is not supported");
    body += c;
  }
  throw std::invalid_argument("unterminated character class");
}

}  // namespace

std::string oniguruma_to_pcre2(std::string_view p) {
  std::string out;
  // Output offset where the last quantifiable item starts (-1: none), for X{n,m}+ rewriting.
  long atom = -1;
  bool after_quantifier = false;
  std::vector<long> groups;  // output offsets where the open groups start
  const auto emit_atom = [&](const std::string& text) {
    atom = static_cast<long>(out.size());
    out += text;
    after_quantifier = false;
  };
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\') {
      if (i + 1 >= p.size()) throw std::invalid_argument("pattern ends with a backslash");
      std::string text;
      if (const size_t used = braced_or_u_escape(p.substr(i), text)) {
        emit_atom(text);
        i += used;
        continue;
      }
      if (p[i + 1] == 'x' && i + 3 < p.size() &&
          std::isxdigit(static_cast<unsigned char>(p[i + 2])) &&
          std::isxdigit(static_cast<unsigned char>(p[i + 3]))) {
        emit_atom(std::string(p.substr(i, 4)));
        i += 4;
        continue;
      }
      if (auto r = translate_escape(p[i + 1], /*in_class=*/false)) {
        emit_atom(*r);
      } else {
        emit_atom(std::string(p.substr(i, 2)));
      }
      i += 2;
      continue;
    }
    switch (c) {
      case '[': {
        std::string cls;
        i += translate_class(p.substr(i), cls);
        emit_atom(cls);
        continue;
      }
      case ']':
        emit_atom("\\]");
        ++i;
        continue;
      case '.':
        emit_atom("[^\\n]");
        ++i;
        continue;
      case '^':
        emit_atom("(?:(?<![\\s\\S])|(?<=\\n))");
        ++i;
        continue;
      case '$':
        emit_atom("(?:(?=\\n)|(?![\\s\\S]))");
        ++i;
        continue;
      case '(': {
        std::string_view prefix = "(";
        std::string_view replacement = "(";
        const std::string_view rest = p.substr(i);
        if (rest.substr(0, 4) == "(?i:") {
          // Unicode case folding in both engines ('ſ' matches 's', U+212A matches 'k').
          prefix = replacement = "(?i:";
        } else if (rest.substr(0, 2) == "(?") {
          for (std::string_view known : {"(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>", "(?#"}) {
            if (rest.substr(0, known.size()) == known) {
              prefix = replacement = known;
              break;
            }
          }
          if (prefix == "(" && rest.substr(0, 3) == "(?<" && rest.size() > 3 &&
              (std::isalpha(static_cast<unsigned char>(rest[3])) || rest[3] == '_'))
            prefix = replacement = "(?<";  // named group: the name follows verbatim
          if (prefix == "(")
            throw std::invalid_argument(fmt::format(
                "inline option group '{}' is not supported (only (?i:...))", rest.substr(0, 4)));
        }
        groups.push_back(static_cast<long>(out.size()));
        out += replacement;
        atom = -1;
        after_quantifier = false;
        i += prefix.size();
        continue;
      }
      case ')':
        if (groups.empty()) throw std::invalid_argument("unmatched ')'");
        out += ')';
        atom = groups.back();
        groups.pop_back();
        after_quantifier = false;
        ++i;
        continue;
      case '|':
        out += '|';
        atom = -1;
        after_quantifier = false;
        ++i;
        continue;
      case '{': {
        // {n}, {n,}, {n,m} or Ruby's {,m}; anything else is a literal brace.
        size_t j = i + 1;
        while (j < p.size() && (std::isdigit(static_cast<unsigned char>(p[j])) || p[j] == ',')) ++j;
        const std::string_view body = p.substr(i + 1, j - i - 1);
        const bool valid = j < p.size() && p[j] == '}' && !body.empty() && body != "," &&
                           body.find(',') == body.rfind(',');
        if (!valid || atom < 0) {
          emit_atom("\\{");
          ++i;
          continue;
        }
        const std::string bounds = body[0] == ',' ? "0" + std::string(body) : std::string(body);
        i = j + 1;
        if (i < p.size() && (p[i] == '+' || p[i] == '*')) {
          // Ruby syntax: X{n,m}+ is (X{n,m})+, not a possessive interval.
          out = out.substr(0, atom) + "(?:" + out.substr(atom) + "{" + bounds + "})" + p[i];
          ++i;
        } else {
          out += "{" + bounds + "}";
        }
        after_quantifier = true;
        continue;
      }
      case '}':
        emit_atom("\\}");
        ++i;
        continue;
      case '*':
      case '+':
      case '?':
        // After a quantifier, '+' makes it possessive and '?' lazy, in both engines.
        out += c;
        after_quantifier = !after_quantifier;
        ++i;
        continue;
      default: {
        const size_t n = utf8_sequence_length(static_cast<unsigned char>(c));
        emit_atom(std::string(p.substr(i, n)));
        i += n;
        continue;
      }
    }
  }
  if (!groups.empty()) throw std::invalid_argument("missing ')'");
  return out;
}

struct Pattern::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

Pattern::Pattern(std::unique_ptr<Compiled> compiled) : compiled_(std::move(compiled)) {}
Pattern::Pattern(Pattern&&) noexcept = default;
Pattern& Pattern::operator=(Pattern&&) noexcept = default;
Pattern::~Pattern() = default;

namespace {

constexpr uint32_t kRegexOptions = PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

pcre2_code* compile(const std::string& source, uint32_t options, const std::string& what,
                    const std::string& where) {
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(),
                                   options, &error, &offset, context);
  pcre2_compile_context_free(context);
  if (!code)
    throw_bad_input(fmt::format("{}: {} does not compile: {} (at offset {} of '{}' as PCRE2)",
                                where, what, pcre2_message(error), offset, source));
  // JIT is an optimisation: without it (e.g. no executable memory) the interpreter still works.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return code;
}

}  // namespace

Pattern Pattern::regex(std::string_view source, const std::string& where) {
  const std::string quoted = nlohmann::json(std::string(source)).dump();
  std::string translated;
  try {
    translated = oniguruma_to_pcre2(source);
  } catch (const std::invalid_argument& e) {
    throw_bad_input(fmt::format("{}: regex {} is not supported: {}", where, quoted, e.what()));
  }
  auto compiled = std::make_unique<Compiled>();
  compiled->code = compile(translated, kRegexOptions, "regex " + quoted, where);
  return Pattern(std::move(compiled));
}

Pattern Pattern::pcre2(const std::string& source, const std::string& where) {
  auto compiled = std::make_unique<Compiled>();
  compiled->code = compile(source, kRegexOptions, "built-in regex", where);
  return Pattern(std::move(compiled));
}

Pattern Pattern::literal(std::string_view text, const std::string& where) {
  if (text.empty()) throw_bad_input(fmt::format("{}: the pattern string is empty", where));
  if (!is_valid_utf8(text))
    throw_bad_input(fmt::format("{}: the pattern string is not valid UTF-8", where));
  auto compiled = std::make_unique<Compiled>();
  compiled->code = compile(std::string(text), PCRE2_UTF | PCRE2_LITERAL, "string pattern", where);
  return Pattern(std::move(compiled));
}

std::vector<Match> Pattern::find_all(std::string_view text) const {
  std::vector<Match> matches;
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(compiled_->code, nullptr);
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc =
        pcre2_match(compiled_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, data, nullptr);
    // JIT's fixed stack can overflow on very long runs; the interpreter grows its own on the heap.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(compiled_->code, subject, text.size(), pos,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(data);
      throw_bad_input(fmt::format("regex matching failed at byte {}: {}", pos, pcre2_message(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const Match m{ovector[0], std::max(ovector[0], ovector[1])};
    matches.push_back(m);
    if (m.end > m.begin) {
      pos = m.end;
    } else {
      if (m.begin >= text.size()) break;
      pos = m.begin + utf8_sequence_length(static_cast<unsigned char>(text[m.begin]));
    }
  }
  pcre2_match_data_free(data);
  return matches;
}

std::string Pattern::replace_all(std::string_view text, std::string_view replacement) const {
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const Match& m : find_all(text)) {
    out.append(text.substr(prev, m.begin - prev));
    out.append(replacement);
    prev = m.end;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace sarqc::tokenizer

#include "sarqc/tokenizer/pre_tokenizer.h"

#include <fmt/format.h>

#include "sarqc/tokenizer/byte_level.h"
#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {
namespace {

// Applies `split_one` to every piece, concatenating the results in order.
template <typename F>
void split_each(std::vector<std::string>& pieces, F&& split_one) {
  std::vector<std::string> out;
  out.reserve(pieces.size());
  for (std::string& piece : pieces) split_one(piece, out);
  pieces = std::move(out);
}

// HF tokenizers' SplitDelimiterBehavior.
enum class SplitMode { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

// `invert`: the pattern names what to keep, so the behaviour applies to the pieces between its
// matches (HF flips the match flags before splitting).
void split_by(const Pattern& pattern, SplitMode mode, bool invert, const std::string& text,
              std::vector<std::string>& out) {
  // The text as alternating segments: (piece, is a match).
  std::vector<std::pair<std::string, bool>> segments;
  size_t prev = 0;
  for (const Match& m : pattern.find_all(text)) {
    if (m.begin > prev) segments.emplace_back(text.substr(prev, m.begin - prev), false);
    if (m.end > m.begin) segments.emplace_back(text.substr(m.begin, m.end - m.begin), true);
    prev = m.end;
  }
  if (prev < text.size()) segments.emplace_back(text.substr(prev), false);
  if (invert)
    for (auto& segment : segments) segment.second = !segment.second;
  switch (mode) {
    case SplitMode::Isolated:
    case SplitMode::Removed:
      for (auto& [piece, match] : segments)
        if (mode == SplitMode::Isolated || !match) out.push_back(std::move(piece));
      return;
    case SplitMode::MergedWithPrevious:
    case SplitMode::Contiguous: {
      // A match joins the segment before it when that is not a match (MergedWithPrevious), or
      // when it is one (Contiguous: runs of matches become one piece).
      bool previous_match = false;
      const size_t first = out.size();
      for (auto& [piece, match] : segments) {
        const bool join = mode == SplitMode::MergedWithPrevious ? match && !previous_match
                                                                : match && previous_match;
        if (join && out.size() > first) out.back() += piece;
        else out.push_back(std::move(piece));
        previous_match = match;
      }
      return;
    }
    case SplitMode::MergedWithNext: {
      // A match joins the segment after it when that is not a match.
      std::vector<std::string> reversed;
      bool next_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->second && !next_match && !reversed.empty()) reversed.back() = it->first + reversed.back();
        else reversed.push_back(std::move(it->first));
        next_match = it->second;
      }
      out.insert(out.end(), std::make_move_iterator(reversed.rbegin()),
                 std::make_move_iterator(reversed.rend()));
      return;
    }
  }
}

class Split final : public PreTokenizer {
 public:
  Split(Pattern pattern, SplitMode mode, bool invert)
      : pattern_(std::move(pattern)), mode_(mode), invert_(invert) {}
  void pre_tokenize(std::vector<std::string>& pieces, size_t) const override {
    split_each(pieces, [&](const std::string& piece, std::vector<std::string>& out) {
      split_by(pattern_, mode_, invert_, piece, out);
    });
  }

 private:
  Pattern pattern_;
  SplitMode mode_;
  bool invert_;
};

// GPT-2's word split, used when ByteLevel has use_regex: HF tokenizers' pattern, compiled like
// the files' own regexes (so \s is White_Space: U+0085 is a space, U+FEFF is not).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Pattern>(Pattern::regex(kGpt2Pattern, where));
  }
  void pre_tokenize(std::vector<std::string>& pieces, size_t) const override {
    const auto& chars = byte_level_chars();
    split_each(pieces, [&](std::string& piece, std::vector<std::string>& out) {
      if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) piece.insert(0, " ");
      const size_t first = out.size();
      if (regex_)
        split_by(*regex_, SplitMode::Removed, /*invert=*/true, piece, out);  // the matches only
      else
        out.push_back(std::move(piece));
      for (size_t i = first; i < out.size(); ++i) {
        std::string mapped;
        mapped.reserve(out[i].size() * 2);
        for (unsigned char b : out[i]) mapped += chars[b];
        out[i] = std::move(mapped);
      }
    });
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Pattern> regex_;
};

enum class PrependScheme { Always, First, Never };

// Spaces become the replacement character (U+2581) and a section may get one in front. With
// split, each piece starts at a replacement character, as HF tokenizers splits (the files of
// Llama 2 and Mistral set split false).
class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<std::string>& pieces, size_t section_index) const override {
    split_each(pieces, [&](const std::string& piece, std::vector<std::string>& out) {
      std::string text;
      text.reserve(piece.size() + replacement_.size());
      for (char c : piece) {
        if (c == ' ')
          text += replacement_;
        else
          text += c;
      }
      const bool prepend = scheme_ == PrependScheme::Always ||
                           (scheme_ == PrependScheme::First && section_index == 0);
      if (prepend && text.compare(0, replacement_.size(), replacement_) != 0)
        text.insert(0, replacement_);
      if (!split_) {
        out.push_back(std::move(text));
        return;
      }
      size_t start = 0;
      for (size_t at = text.find(replacement_, 1); at != std::string::npos;
           at = text.find(replacement_, at + replacement_.size())) {
        if (at > start) out.push_back(text.substr(start, at - start));
        start = at;
      }
      if (start < text.size()) out.push_back(text.substr(start));
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<std::string>& pieces, size_t section_index) const override {
    for (const auto& step : steps_)
      if (step) step->pre_tokenize(pieces, section_index);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const ConfigNode& config) {
  if (config.is_null()) return nullptr;
  const ConfigNode node = config.typed();
  const std::string type = node.type();
  if (type == "Split") {
    Pattern pattern = read_pattern(node.child("pattern"));
    const bool invert = node.boolean_or("invert", false);
    const std::string behavior = node.string("behavior");
    for (const auto& [name, mode] :
         {std::pair{"Isolated", SplitMode::Isolated}, std::pair{"Removed", SplitMode::Removed},
          std::pair{"MergedWithPrevious", SplitMode::MergedWithPrevious},
          std::pair{"MergedWithNext", SplitMode::MergedWithNext},
          std::pair{"Contiguous", SplitMode::Contiguous}})
      if (behavior == name) return std::make_unique<Split>(std::move(pattern), mode, invert);
    node.child("behavior")
        .fail(fmt::format("unsupported split behavior '{}' (supported: Isolated, Removed, "
                          "MergedWithPrevious, MergedWithNext, Contiguous)",
                          behavior));
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevel>(node.boolean_or("add_prefix_space", false),
                                       node.boolean_or("use_regex", true), node.where());
  if (type == "Metaspace") {
    // Files written before prepend_scheme existed say add_prefix_space instead.
    std::string scheme = node.boolean_or("add_prefix_space", true) ? "always" : "never";
    scheme = node.string_or("prepend_scheme", scheme);
    PrependScheme parsed;
    if (scheme == "always")
      parsed = PrependScheme::Always;
    else if (scheme == "first")
      parsed = PrependScheme::First;
    else if (scheme == "never")
      parsed = PrependScheme::Never;
    else
      node.child("prepend_scheme")
          .fail(fmt::format("must be \"always\", \"first\" or \"never\", got \"{}\"", scheme));
    const std::string replacement = node.string_or("replacement", "\xE2\x96\x81");
    if (replacement.empty() || !is_valid_utf8(replacement))
      node.child("replacement").fail("must be a non-empty UTF-8 string");
    return std::make_unique<Metaspace>(replacement, parsed, node.boolean_or("split", true));
  }
  if (type == "Digits") {
    // Every Unicode number (Nd, Nl, No: Rust's char::is_numeric), as HF tokenizers: runs of
    // them, or each alone with individual_digits.
    const char* source = node.boolean_or("individual_digits", false) ? "[^\\p{N}]+|\\p{N}"
                                                                      : "[^\\p{N}]+|\\p{N}+";
    return std::make_unique<Split>(Pattern::pcre2(source, node.where()), SplitMode::Removed,
                                   /*invert=*/true);  // the matches only
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const ConfigNode& item : node.array("pretokenizers"))
      steps.push_back(make_pre_tokenizer(item));
    return std::make_unique<Sequence>(std::move(steps));
  }
  node.fail(
      fmt::format("unsupported pre-tokenizer type '{}' (supported: Split, ByteLevel, "
                  "Metaspace, Digits, Sequence)",
                  type));
}

}  // namespace sarqc::tokenizer

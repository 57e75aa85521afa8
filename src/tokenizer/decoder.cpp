#include "sarqc/tokenizer/decoder.h"

#include <fmt/format.h>

#include "sarqc/tokenizer/byte_level.h"
#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {
namespace {

// Byte-level tokens become bytes again, decoded as UTF-8 with replacement characters for what
// is invalid (a sequence cut in the middle of a character); added tokens stay as they are.
class ByteLevel final : public Decoder {
 public:
  explicit ByteLevel(const std::unordered_set<std::string>& added) : added_(added) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    const auto flush = [&] {
      if (!bytes.empty()) out.push_back(to_valid_utf8(bytes));
      bytes.clear();
    };
    for (const std::string& token : tokens) {
      if (added_.count(token)) {
        flush();
        out.push_back(token);
        continue;
      }
      for (size_t pos = 0; pos < token.size();) {
        const size_t begin = pos;
        const int b = byte_level_byte(next_code_point(token, pos));
        if (b >= 0)
          bytes.push_back(static_cast<char>(b));
        else
          bytes.append(token, begin, pos - begin);  // not from the byte map: keep it as text
      }
    }
    flush();
    return out;
  }

 private:
  const std::unordered_set<std::string>& added_;
};

class Metaspace final : public Decoder {
 public:
  Metaspace(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string text;
      const std::string& token = tokens[i];
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          text += ' ';
          pos += replacement_.size();
        } else {
          text += token[pos++];
        }
      }
      if (i == 0 && strip_first_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
      tokens[i] = std::move(text);
    }
    return tokens;
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class Replace final : public Decoder {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (std::string& token : tokens) token = pattern_.replace_all(token, content_);
    return tokens;
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Runs of <0xNN> tokens become the UTF-8 text of their bytes.
class ByteFallback final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    bool pending = false;
    for (std::string& token : tokens) {
      int value = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
        char* end = nullptr;
        const std::string hex = token.substr(3, 2);
        const long v = std::strtol(hex.c_str(), &end, 16);
        if (end == hex.c_str() + 2) value = static_cast<int>(v);
      }
      if (value >= 0) {
        bytes.push_back(static_cast<char>(value));
        pending = true;
        continue;
      }
      if (pending) out.push_back(to_valid_utf8(bytes));
      bytes.clear();
      pending = false;
      out.push_back(std::move(token));
    }
    if (pending) out.push_back(to_valid_utf8(bytes));
    return out;
  }
};

class Fuse final : public Decoder {
 public:
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    return {all};
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from each token.
class Strip final : public Decoder {
 public:
  Strip(std::string content, int64_t start, int64_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    const size_t n = content_.size();
    for (std::string& token : tokens) {
      size_t begin = 0, end = token.size();
      for (int64_t i = 0; i < start_ && begin + n <= end && token.compare(begin, n, content_) == 0;
           ++i)
        begin += n;
      for (int64_t i = 0; i < stop_ && end >= begin + n && token.compare(end - n, n, content_) == 0;
           ++i)
        end -= n;
      token = token.substr(begin, end - begin);
    }
    return tokens;
  }

 private:
  std::string content_;
  int64_t start_, stop_;
};

class Sequence final : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
    for (const auto& step : steps_)
      if (step) tokens = step->decode_chain(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const ConfigNode& config,
                                      const std::unordered_set<std::string>& added_tokens) {
  if (config.is_null()) return nullptr;
  const ConfigNode node = config.typed();
  const std::string type = node.type();
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(added_tokens);
  if (type == "Metaspace") {
    const bool never = node.string_or("prepend_scheme", "always") == "never" ||
                       !node.boolean_or("add_prefix_space", true);
    return std::make_unique<Metaspace>(node.string_or("replacement", "\xE2\x96\x81"), !never);
  }
  if (type == "Replace")
    return std::make_unique<Replace>(read_pattern(node.child("pattern")),
                                     node.string_or("content", ""));
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") {
    const std::string content = node.string("content");
    size_t pos = 0;
    if (content.empty() || !is_valid_utf8(content) ||
        (next_code_point(content, pos), pos) != content.size())
      node.child("content").fail("must be a single character");
    return std::make_unique<Strip>(content, node.integer("start"), node.integer("stop"));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const ConfigNode& item : node.array("decoders"))
      steps.push_back(make_decoder(item, added_tokens));
    return std::make_unique<Sequence>(std::move(steps));
  }
  node.fail(
      fmt::format("unsupported decoder type '{}' (supported: ByteLevel, Metaspace, Replace, "
                  "ByteFallback, Fuse, Strip, Sequence)",
                  type));
}

}  // namespace sarqc::tokenizer

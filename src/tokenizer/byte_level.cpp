#include "sarqc/tokenizer/byte_level.h"

#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {
namespace {

bool printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

struct Tables {
  std::array<std::string, 256> chars;
  std::array<int, 512> bytes;  // every mapped code point is below U+0144
  Tables() {
    bytes.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
      append_utf8(chars[b], cp);
      bytes[cp] = b;
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_level_chars() { return tables().chars; }

int byte_level_byte(char32_t cp) { return cp < 512 ? tables().bytes[cp] : -1; }

}  // namespace sarqc::tokenizer

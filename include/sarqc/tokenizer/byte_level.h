#pragma once
// GPT-2's reversible byte <-> printable character map used by ByteLevel pre-tokenizers and
// decoders: bytes that are printable Latin-1 map to themselves, the other 68 to U+0100.. in order.
#include <array>
#include <string>

namespace sarqc::tokenizer {

// UTF-8 encoding of the character standing for each byte.
const std::array<std::string, 256>& byte_level_chars();
// The byte a character stands for, or -1 when `cp` is not in the map.
int byte_level_byte(char32_t cp);

}  // namespace sarqc::tokenizer

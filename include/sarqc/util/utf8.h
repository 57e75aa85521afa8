#pragma once
// UTF-8 helpers for the tokenizer. Text from files may hold invalid bytes; it is made valid once,
// at the entry point, by the WHATWG decoder's rule (each maximal invalid subpart becomes U+FFFD),
// which is what a JavaScript TextDecoder or Python's errors="replace" produce. Everything after
// that point may assume valid UTF-8.
#include <cstddef>
#include <string>
#include <string_view>

namespace sarqc {

inline constexpr char32_t kReplacementCharacter = 0xFFFD;

// `text` with every maximal invalid subpart replaced by U+FFFD; valid input comes back unchanged.
std::string to_valid_utf8(std::string_view text);
bool is_valid_utf8(std::string_view text);

// The code point starting at byte `pos` of valid UTF-8 `text`; advances `pos` past it.
char32_t next_code_point(std::string_view text, size_t& pos);
// Byte length of the UTF-8 sequence whose first byte is `lead` (valid input only).
size_t utf8_sequence_length(unsigned char lead);
void append_utf8(std::string& out, char32_t cp);

// JavaScript's String.prototype.trim set (WhiteSpace and LineTerminator): the reference
// implementation strips this set around added tokens with lstrip/rstrip.
bool is_js_whitespace(char32_t cp);
std::string_view trim_js_whitespace_left(std::string_view text);
std::string_view trim_js_whitespace_right(std::string_view text);

}  // namespace sarqc

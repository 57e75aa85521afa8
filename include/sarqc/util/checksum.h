#pragma once
// A fast 64-bit checksum of bytes, for the files an interrupted run saves and later reuses
// (activation streams, the tensors of a partial output): it catches truncation, bit flips and
// stale bytes at several GB/s, where SHA-256 would cost minutes per layer on large streams. Not
// a defence against deliberate forgery: the fingerprint's SHA-256 covers the inputs.
#include <cstddef>
#include <cstdint>
#include <string>

namespace sarqc {

class Checksum {
 public:
  void update(const void* data, size_t size);
  std::string hex() const;  // 16 hex digits; depends on every byte, its position and the length

 private:
  uint64_t lanes_[4] = {0x9E3779B97F4A7C15ull, 0xC2B2AE3D27D4EB4Full, 0x165667B19E3779F9ull,
                        0x27D4EB2F165667C5ull};
  uint64_t length_ = 0;
  unsigned char tail_[32] = {};
  size_t tail_size_ = 0;

  void block(const unsigned char* p);
};

std::string checksum_hex(const void* data, size_t size);

}  // namespace sarqc

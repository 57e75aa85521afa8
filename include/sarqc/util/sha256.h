#pragma once
// SHA-256 (FIPS 180-4), for fingerprints of calibration data and checksums in tests.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sarqc {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(std::string_view text) { update(text.data(), text.size()); }
  std::array<uint8_t, 32> digest();  // finalizes; the object must not be updated afterwards
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(const void* data, size_t size);

}  // namespace sarqc

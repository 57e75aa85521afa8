#include "sarqc/util/checksum.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace sarqc {
namespace {

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4Full;

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// One lane's round: the word enters through a multiplication and a rotation (xxHash64's round
// structure), so a changed bit moves the lane by a product, never cancelled by another word.
uint64_t lane_round(uint64_t lane, uint64_t word) { return rotl(lane + word * kPrime2, 31) * kPrime1; }

uint64_t load64(const unsigned char* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime1;
  h ^= h >> 32;
  return h;
}

}  // namespace

void Checksum::block(const unsigned char* p) {
  for (int i = 0; i < 4; ++i) lanes_[i] = lane_round(lanes_[i], load64(p + 8 * i));
}

void Checksum::update(const void* data, size_t size) {
  if (size == 0) return;  // data may be null
  const auto* p = static_cast<const unsigned char*>(data);
  length_ += size;
  if (tail_size_ > 0) {
    const size_t take = std::min(size, sizeof(tail_) - tail_size_);
    std::memcpy(tail_ + tail_size_, p, take);
    tail_size_ += take, p += take, size -= take;
    if (tail_size_ < sizeof(tail_)) return;
    block(tail_);
    tail_size_ = 0;
  }
  for (; size >= 32; p += 32, size -= 32) block(p);
  std::memcpy(tail_, p, size);
  tail_size_ = size;
}

std::string Checksum::hex() const {
  uint64_t h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) + rotl(lanes_[3], 18);
  for (int i = 0; i < 4; ++i) h = (h ^ lane_round(0, lanes_[i])) * kPrime1 + kPrime2;
  h += length_;
  for (size_t i = 0; i < tail_size_; ++i) h = rotl(h ^ (tail_[i] * kPrime1), 11) * kPrime2;
  return fmt::format("{:016x}", mix(h));
}

std::string checksum_hex(const void* data, size_t size) {
  Checksum c;
  c.update(data, size);
  return c.hex();
}

}  // namespace sarqc

#pragma once
// tokenizer.json "model" of type BPE: the vocabulary, the ranked merges, and what to do with a
// character that is not in the vocabulary (byte fallback to <0xNN> tokens, the unknown token, or
// dropping it, in that order of preference).
#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "sarqc/tokenizer/config_node.h"

namespace sarqc::tokenizer {

// Ids are indices of dense tables; no real vocabulary comes near this bound.
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

class BpeModel {
 public:
  explicit BpeModel(const ConfigNode& model);

  // Appends the ids of each piece (each merged separately) to `out`. With fuse_unk, consecutive
  // unknown tokens across the pieces of one call collapse into one, as in the reference.
  void encode(const std::vector<std::string>& pieces, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_id(const std::string& token) const;
  std::optional<int32_t> unk_id() const { return unk_id_; }
  // Vocabulary entries by id; ids the vocabulary skips are empty strings.
  std::vector<std::string> tokens() const;

 private:
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void merge(std::string_view chunk, std::vector<int32_t>& out) const;
  bool can_join(char32_t left, char32_t right) const;
  void emit_unknown_symbol(std::string_view symbol, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<char32_t, int32_t> single_code_point_ids_;
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> ids, -1 where missing
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  // Code-point pairs that occur inside some vocabulary entry, built on first use. No merge can
  // join two neighbours outside this set, so a long piece is merged chunk by chunk between them.
  mutable std::once_flag bigrams_built_;
  mutable std::unordered_set<uint64_t> bigrams_;
};

}  // namespace sarqc::tokenizer

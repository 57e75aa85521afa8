#include "sarqc/tokenizer/bpe_model.h"

#include <fmt/format.h>

#include <queue>

#include "sarqc/util/utf8.h"

namespace sarqc::tokenizer {
namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

BpeModel::BpeModel(const ConfigNode& model) {
  const ConfigNode vocab = model.child("vocab");
  if (!vocab.value().is_object()) vocab.fail("must be an object mapping tokens to ids");
  vocab_.reserve(vocab.value().size());
  for (const auto& [token, id] : vocab.value().items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId)
      vocab.fail(fmt::format("the id of token {} must be an integer in [0, {}], got {}",
                             nlohmann::json(token).dump(), kMaxTokenId, id.dump()));
    const auto value = static_cast<int32_t>(id.get<int64_t>());
    vocab_.emplace(token, value);
    size_t pos = 0;
    if (!token.empty() && is_valid_utf8(token)) {
      const char32_t cp = next_code_point(token, pos);
      if (pos == token.size()) single_code_point_ids_.emplace(cp, value);
    }
  }

  const std::vector<ConfigNode> merges = model.array("merges");
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const ConfigNode& merge = merges[rank];
    std::string left, right;
    if (merge.value().is_string()) {
      // Legacy form "left right": tokens cannot contain a space there.
      const std::string text = merge.value().get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        merge.fail(
            fmt::format("must be two tokens separated by one space, got {}", merge.value().dump()));
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.value().is_array() && merge.value().size() == 2 &&
               merge.value()[0].is_string() && merge.value()[1].is_string()) {
      left = merge.value()[0].get<std::string>();
      right = merge.value()[1].get<std::string>();
    } else {
      merge.fail(fmt::format("must be \"left right\" or [\"left\", \"right\"], got {}",
                             merge.value().dump()));
    }
    const auto id_in_vocab = [&](const std::string& token) {
      const auto it = vocab_.find(token);
      if (it == vocab_.end())
        merge.fail(fmt::format("{} is not in model.vocab", nlohmann::json(token).dump()));
      return it->second;
    };
    const int32_t l = id_in_vocab(left), r = id_in_vocab(right), m = id_in_vocab(left + right);
    // A repeated pair keeps its first (best) rank.
    merges_.emplace(pair_key(l, r), Merge{static_cast<int32_t>(rank), m});
  }

  if (model.has("unk_token")) {
    const std::string unk = model.string("unk_token");
    const auto it = vocab_.find(unk);
    if (it == vocab_.end())
      model.child("unk_token").fail(fmt::format("'{}' is not in model.vocab", unk));
    unk_id_ = it->second;
  }
  byte_fallback_ = model.boolean_or("byte_fallback", false);
  fuse_unk_ = model.boolean_or("fuse_unk", false);
  ignore_merges_ = model.boolean_or("ignore_merges", false);
  byte_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
    if (it != vocab_.end()) byte_ids_[b] = it->second;
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!model.string_or(key, "").empty())
      model.child(key).fail("a non-empty value is not supported");
  if (model.has("dropout") && !model.child("dropout").value().is_null())
    model.child("dropout").fail(
        "BPE dropout is not supported (tokenization must be deterministic)");
}

std::vector<std::string> BpeModel::tokens() const {
  std::vector<std::string> tokens;
  for (const auto& [token, id] : vocab_) {
    if (static_cast<size_t>(id) >= tokens.size()) tokens.resize(id + 1);
    // Two entries with one id: the greatest string, whatever the hash order.
    if (token > tokens[id]) tokens[id] = token;
  }
  return tokens;
}

std::optional<int32_t> BpeModel::token_id(const std::string& token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::emit_unknown_symbol(std::string_view symbol, std::vector<int32_t>& out) const {
  if (byte_fallback_) {
    bool all = true;
    for (unsigned char b : symbol) all = all && byte_ids_[b] >= 0;
    if (all) {
      for (unsigned char b : symbol) out.push_back(byte_ids_[b]);
      return;
    }
  }
  if (unk_id_) out.push_back(*unk_id_);
  // Without an unknown token the symbol is dropped, as the reference does.
}

bool BpeModel::can_join(char32_t left, char32_t right) const {
  std::call_once(bigrams_built_, [this] {
    for (const auto& [token, id] : vocab_) {
      if (!is_valid_utf8(token)) continue;
      size_t pos = 0;
      char32_t prev = 0;
      for (bool first = true; pos < token.size(); first = false) {
        const char32_t cp = next_code_point(token, pos);
        if (!first) bigrams_.insert(pair_key(static_cast<int32_t>(prev), static_cast<int32_t>(cp)));
        prev = cp;
      }
    }
  });
  return bigrams_.count(pair_key(static_cast<int32_t>(left), static_cast<int32_t>(right))) > 0;
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    const auto it = vocab_.find(std::string(piece));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Without a pre-tokenizer (Llama 2's layout) a piece is a whole text section. Merging it in
  // chunks cut where no vocabulary entry spans the cut gives the same tokens, since merges only
  // ever join neighbours, and keeps the candidate queue small.
  constexpr size_t kLongPiece = 256;
  if (piece.size() <= kLongPiece) return merge(piece, out);
  size_t chunk_start = 0, pos = 0;
  char32_t prev = next_code_point(piece, pos);
  while (pos < piece.size()) {
    const size_t at = pos;
    const char32_t cp = next_code_point(piece, pos);
    if (!can_join(prev, cp)) {
      merge(piece.substr(chunk_start, at - chunk_start), out);
      chunk_start = at;
    }
    prev = cp;
  }
  merge(piece.substr(chunk_start), out);
}

// One symbol per code point, linked so that merging never moves memory. A merged symbol keeps
// the index of its left part, so (rank, index) orders candidates as the reference does: best rank
// first, leftmost first among equals.
void BpeModel::merge(std::string_view piece, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;  // -1: not in the vocabulary (never merges)
    uint32_t begin, end;
    int32_t prev, next;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (size_t pos = 0; pos < piece.size();) {
    const size_t begin = pos;
    const char32_t cp = next_code_point(piece, pos);
    const auto it = single_code_point_ids_.find(cp);
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({it == single_code_point_ids_.end() ? -1 : it->second,
                       static_cast<uint32_t>(begin), static_cast<uint32_t>(pos), n - 1, n + 1});
  }
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank, left, left_id, right_id, result;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0 || symbols[left].id < 0 || symbols[right].id < 0) return;
    const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end())
      queue.push({it->second.rank, left, symbols[left].id, symbols[right].id, it->second.result});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    // Stale: the left symbol was merged away or changed, or its neighbour did.
    if (left.id != c.left_id || left.next < 0 || symbols[left.next].id != c.right_id) continue;
    Symbol& right = symbols[left.next];
    left.id = c.result;
    left.end = right.end;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = -2;  // dead
    if (left.prev >= 0) push(left.prev);
    push(c.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    if (symbols[i].id >= 0)
      out.push_back(symbols[i].id);
    else
      emit_unknown_symbol(piece.substr(symbols[i].begin, symbols[i].end - symbols[i].begin), out);
  }
}

void BpeModel::encode(const std::vector<std::string>& pieces, std::vector<int32_t>& out) const {
  const size_t first = out.size();
  for (const std::string& piece : pieces) encode_piece(piece, out);
  if (!fuse_unk_ || !unk_id_) return;
  size_t kept = first;
  for (size_t i = first; i < out.size(); ++i) {
    if (out[i] == *unk_id_ && kept > first && out[kept - 1] == *unk_id_) continue;
    out[kept++] = out[i];
  }
  out.resize(kept);
}

}  // namespace sarqc::tokenizer

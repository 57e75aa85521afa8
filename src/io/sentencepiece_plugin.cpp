// The plugin itself: the only translation unit that includes sentencepiece headers.
#include "sentencepiece_plugin.h"

#include <sentencepiece_processor.h>

namespace {

class Model final : public sarqc::detail::SentencePieceModel {
 public:
  bool load(const std::string& path, std::string* error) override {
    const auto status = processor_.Load(path);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool encode(std::string_view text, std::vector<int>* ids, std::string* error) const override {
    const auto status = processor_.Encode(absl::string_view(text.data(), text.size()), ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    const auto status = processor_.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  int piece_size() const override { return processor_.GetPieceSize(); }
  int piece_to_id(std::string_view piece) const override {
    return processor_.PieceToId(absl::string_view(piece.data(), piece.size()));
  }
  std::string id_to_piece(int id) const override { return processor_.IdToPiece(id); }
  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }
  int unk_id() const override { return processor_.unk_id(); }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) sarqc::detail::SentencePieceModel*
sarqc_create_sentencepiece_model() {
  return new Model();
}

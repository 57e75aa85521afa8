#pragma once
// Internal interface between sarqc and its sentencepiece plugin (libsarqc_sentencepiece.so).
//
// Why a plugin: Debian's libsentencepiece embeds and exports its own protobuf-lite, while
// libtorch links the system libprotobuf. Linked into one process, the two resolve each other's
// symbols and the process crashes during static initialization. Loading sentencepiece through a
// plugin opened with RTLD_LOCAL | RTLD_DEEPBIND keeps its protobuf private to it.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sarqc::detail {

class SentencePieceModel {
 public:
  virtual ~SentencePieceModel() = default;
  // Each call returns false and sets *error on failure.
  virtual bool load(const std::string& path, std::string* error) = 0;
  virtual bool encode(std::string_view text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool decode(const std::vector<int>& ids, std::string* text,
                      std::string* error) const = 0;
  virtual int piece_size() const = 0;
  virtual int piece_to_id(std::string_view piece) const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int unk_id() const = 0;
};

// Exported by the plugin with C linkage so dlsym can find it.
using CreateSentencePieceModelFn = SentencePieceModel* (*)();
inline constexpr const char* kCreateSentencePieceModelSymbol = "sarqc_create_sentencepiece_model";
inline constexpr const char* kSentencePiecePluginFile = "libsarqc_sentencepiece.so";

// Loads the plugin once per process (next to the executable, or in $SARQC_PLUGIN_DIR) and
// creates a model. Throws a runtime Error when the plugin cannot be loaded.
std::unique_ptr<SentencePieceModel> create_sentencepiece_model();

}  // namespace sarqc::detail

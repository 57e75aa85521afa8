#pragma once
// safetensors writer. The layout (names, dtypes, shapes) is fixed up front, so the header is
// written first and tensors can then be streamed in any order with bounded memory; the file
// appears under its final name only after commit().
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/io/dtype.h"
#include "sarqc/util/file.h"

namespace sarqc {

struct TensorSpec {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;

  uint64_t nbytes() const;
  static TensorSpec of(const std::string& name, const at::Tensor& tensor);
};

using Metadata = std::map<std::string, std::string>;

// Tensor name -> the checksum of the bytes written for it (util/checksum.h).
using WrittenTensors = std::map<std::string, std::string>;

// A resumable output (quantize's work folder): files are built under "<name>.partial" and kept
// when the process ends uncommitted; a rerun reopens them and keeps the bytes of the tensors in
// `written`, which an earlier run stored and synced, once each reads back with its checksum (a
// truncated or altered file is refused: a state conflict naming the tensor and --restart).
struct ResumableWrite {
  WrittenTensors written;
};

class SafetensorsWriter {
 public:
  // metadata gets "format": "pt" added (transformers checks it whenever metadata is present).
  SafetensorsWriter(const std::filesystem::path& path, std::vector<TensorSpec> specs,
                    Metadata metadata = {}, const ResumableWrite* resume = nullptr);

  // Writes one tensor (any device, any layout); its dtype and shape must match the spec.
  void write(const std::string& name, const at::Tensor& tensor);
  // Throws unless every planned tensor was written.
  void check_complete() const;
  // The tensors written so far (by this writer or, when resumed, an earlier run).
  WrittenTensors written() const;
  // fsync: every tensor written so far is on disk.
  void sync();
  // check_complete(), then publishes the file atomically.
  void commit();

  uint64_t data_bytes() const { return data_bytes_; }

 private:
  struct Slot {
    TensorSpec spec;
    uint64_t begin = 0;
    bool written = false;
    std::string checksum;  // of the written bytes
  };
  // Reads back each tensor an earlier run wrote and compares its checksum.
  void verify_written() const;
  std::unique_ptr<AtomicFileWriter> file_;
  bool resumable_ = false;  // checksums are kept only for a file a rerun may continue
  std::map<std::string, Slot> slots_;
  uint64_t data_start_ = 0;
  uint64_t data_bytes_ = 0;
};

// Writes a whole checkpoint into a directory: model.safetensors when everything fits in one shard,
// else model-XXXXX-of-YYYYY.safetensors plus model.safetensors.index.json (written last, so a
// directory without the index is visibly incomplete). Tensors keep the given order; a new shard
// starts when the next module would exceed max_shard_bytes, and the tensors of one module
// (same name up to the last '.') are never split across shards.
class ShardedWriter {
 public:
  static constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000ULL;

  ShardedWriter(const std::filesystem::path& dir, std::vector<TensorSpec> specs,
                Metadata metadata = {}, uint64_t max_shard_bytes = kDefaultMaxShardBytes,
                const ResumableWrite* resume = nullptr);

  void write(const std::string& name, const at::Tensor& tensor);
  WrittenTensors written() const;
  void sync();
  void commit();

  size_t shard_count() const { return shards_.size(); }
  const std::vector<std::string>& shard_names() const { return shard_names_; }

 private:
  std::filesystem::path dir_;
  std::vector<std::unique_ptr<SafetensorsWriter>> shards_;
  std::vector<std::string> shard_names_;
  std::map<std::string, size_t> shard_of_;
  uint64_t total_bytes_ = 0;
};

// Convenience for small outputs (tests, fixtures): one file, tensors from memory.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      Metadata metadata = {});

}  // namespace sarqc

#pragma once
// safetensors reader: the whole header is validated when the file is opened (so a malformed file
// is rejected before any work starts); tensor data is memory-mapped and read only when touched.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "sarqc/io/dtype.h"
#include "sarqc/util/file.h"

namespace sarqc {

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data buffer, end exclusive
  uint64_t end = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// Limits of the reference implementation: larger headers are refused.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

class SafetensorsFile {
 public:
  // Opens and validates; throws a bad-input Error naming the file and the problem.
  static SafetensorsFile open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_->path(); }
  // Tensors in data order (ascending offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_bytes() const { return header_bytes_; }
  uint64_t data_bytes() const { return file_->size() - 8 - header_bytes_; }

  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const TensorInfo& info(std::string_view name) const;  // throws bad-input if absent

  // On CPU the result is a zero-copy view of the mapping when the data is aligned for its dtype,
  // otherwise a copy; on other devices it is a copy there. The view keeps the mapping alive.
  at::Tensor load(std::string_view name, c10::Device device = c10::Device(c10::kCPU)) const;

 private:
  std::shared_ptr<const MappedFile> file_;
  uint64_t header_bytes_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace sarqc

#pragma once
// A HuggingFace checkpoint folder: model.safetensors, or shards listed by
// model.safetensors.index.json. Every shard header is validated at open; tensor bytes are read
// only when a tensor is loaded, so streaming one decoder layer touches only that layer's data.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "sarqc/io/safetensors_reader.h"

namespace sarqc {

inline constexpr const char* kSafetensorsIndexName = "model.safetensors.index.json";
inline constexpr const char* kSingleSafetensorsName = "model.safetensors";

class Checkpoint {
 public:
  // Throws a bad-input Error naming the folder/file and the problem.
  static Checkpoint open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  bool sharded() const { return sharded_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }

  std::vector<std::string> tensor_names() const;  // sorted
  size_t tensor_count() const { return location_.size(); }
  bool contains(std::string_view name) const { return location_.count(name) > 0; }
  const TensorInfo& info(std::string_view name) const;  // throws bad-input naming the tensor
  at::Tensor load(std::string_view name, c10::Device device = c10::Device(c10::kCPU)) const;

  uint64_t total_bytes() const;   // tensor data, headers excluded
  int64_t total_numel() const;

 private:
  std::filesystem::path dir_;
  bool sharded_ = false;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t, std::less<>> location_;  // tensor -> index into files_
};

}  // namespace sarqc

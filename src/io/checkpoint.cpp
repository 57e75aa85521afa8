#include "sarqc/io/checkpoint.h"

#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sarqc/util/error.h"
#include "sarqc/util/json_file.h"

namespace sarqc {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool has_pickle_weights(const fs::path& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".bin" || entry.path().extension() == ".pt" ||
        entry.path().extension() == ".pth")
      return true;
  return false;
}

// Shard names come from a file we do not trust: keep them inside the checkpoint folder.
void check_shard_name(const fs::path& index_path, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == ".." ||
      name.find('\\') != std::string::npos)
    throw_bad_input(fmt::format("{}: shard file name '{}' must be a plain file name in the same "
                                "folder",
                                index_path.string(), name));
}

}  // namespace

Checkpoint Checkpoint::open(const fs::path& dir) {
  Checkpoint ckpt;
  ckpt.dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw_bad_input(fmt::format("{}: not a directory (expected a HuggingFace model folder)",
                                dir.string()));

  const fs::path index_path = dir / kSafetensorsIndexName;
  const fs::path single_path = dir / kSingleSafetensorsName;
  if (fs::exists(index_path, ec)) {
    ckpt.sharded_ = true;
    const json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index.at("weight_map").is_object())
      throw_bad_input(fmt::format("{}: missing object 'weight_map' (tensor name -> shard file)",
                                  index_path.string()));
    const json& weight_map = index.at("weight_map");
    if (weight_map.empty())
      throw_bad_input(fmt::format("{}: 'weight_map' is empty", index_path.string()));
    std::map<std::string, size_t> shard_index;  // shard file name -> files_ position
    std::map<std::string, std::string> listed;  // tensor -> shard file name
    for (const auto& [tensor, shard_value] : weight_map.items()) {
      if (!shard_value.is_string())
        throw_bad_input(fmt::format("{}: weight_map entry '{}' must be a file name string",
                                    index_path.string(), tensor));
      const std::string shard = shard_value.get<std::string>();
      check_shard_name(index_path, shard);
      listed[tensor] = shard;
      if (shard_index.count(shard) == 0) {
        const fs::path shard_path = dir / shard;
        if (!fs::exists(shard_path, ec))
          throw_bad_input(fmt::format("{}: shard '{}' listed in the index is missing",
                                      dir.string(), shard));
        shard_index[shard] = ckpt.files_.size();
        ckpt.files_.push_back(SafetensorsFile::open(shard_path));
      }
    }
    for (const auto& [tensor, shard] : listed) {
      const size_t file = shard_index[shard];
      if (!ckpt.files_[file].contains(tensor))
        throw_bad_input(fmt::format("{}: tensor '{}' is named in the index but absent from "
                                    "shard '{}'",
                                    index_path.string(), tensor, shard));
      ckpt.location_.emplace(tensor, file);
    }
    for (const auto& file : ckpt.files_)
      for (const auto& t : file.tensors())
        if (listed.count(t.name) == 0 || dir / listed[t.name] != file.path())
          throw_bad_input(fmt::format("{}: tensor '{}' in shard '{}' is not mapped to that shard "
                                      "by the index",
                                      index_path.string(), t.name,
                                      file.path().filename().string()));
  } else if (fs::exists(single_path, ec)) {
    ckpt.files_.push_back(SafetensorsFile::open(single_path));
    for (const auto& t : ckpt.files_[0].tensors()) ckpt.location_.emplace(t.name, 0);
  } else if (has_pickle_weights(dir)) {
    throw_bad_input(fmt::format("{}: only pickle weights (*.bin/*.pt) found; sarqc reads "
                                "safetensors only (convert with transformers' save_pretrained("
                                "safe_serialization=True))",
                                dir.string()));
  } else {
    throw_bad_input(fmt::format("{}: no {} or {} found", dir.string(), kSingleSafetensorsName,
                                kSafetensorsIndexName));
  }
  return ckpt;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(location_.size());
  for (const auto& [name, file] : location_) names.push_back(name);
  return names;
}

const TensorInfo& Checkpoint::info(std::string_view name) const {
  const auto it = location_.find(name);
  if (it == location_.end())
    throw_bad_input(fmt::format("{}: checkpoint has no tensor '{}'", dir_.string(), name));
  return files_[it->second].info(name);
}

at::Tensor Checkpoint::load(std::string_view name, c10::Device device) const {
  const auto it = location_.find(name);
  if (it == location_.end())
    throw_bad_input(fmt::format("{}: checkpoint has no tensor '{}'", dir_.string(), name));
  return files_[it->second].load(name, device);
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& file : files_) total += file.data_bytes();
  return total;
}

int64_t Checkpoint::total_numel() const {
  int64_t total = 0;
  for (const auto& file : files_)
    for (const auto& t : file.tensors()) total += t.numel();
  return total;
}

}  // namespace sarqc

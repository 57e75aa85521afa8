#include "sarqc/io/safetensors_writer.h"

#include <algorithm>
#include <fstream>
#include <vector>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sarqc/util/checksum.h"
#include "sarqc/util/error.h"
#include "sarqc/util/fault_point.h"

namespace sarqc {
namespace fs = std::filesystem;
using nlohmann::json;

uint64_t TensorSpec::nbytes() const {
  uint64_t n = dtype_itemsize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

TensorSpec TensorSpec::of(const std::string& name, const at::Tensor& tensor) {
  return TensorSpec{name, dtype_from_scalar_type(tensor.scalar_type()), tensor.sizes().vec()};
}

namespace {
std::unique_ptr<AtomicFileWriter> open_output(const fs::path& path,
                                              const std::vector<TensorSpec>& specs,
                                              const ResumableWrite* resume) {
  if (resume == nullptr) return std::make_unique<AtomicFileWriter>(path);
  bool keep = false;
  for (const auto& spec : specs) keep |= resume->written.count(spec.name) > 0;
  fs::path temp = path;
  temp += ".partial";
  // Committed by a run that crashed before its output was published: continued as it is.
  if (keep && !fs::exists(temp) && fs::exists(path)) fs::rename(path, temp);
  return std::make_unique<AtomicFileWriter>(path, temp, keep);
}
}  // namespace

SafetensorsWriter::SafetensorsWriter(const fs::path& path, std::vector<TensorSpec> specs,
                                     Metadata metadata, const ResumableWrite* resume)
    : file_(open_output(path, specs, resume)), resumable_(resume != nullptr) {
  // Larger items first, then by name: every offset is then a multiple of its itemsize.
  std::sort(specs.begin(), specs.end(), [](const TensorSpec& a, const TensorSpec& b) {
    const size_t ia = dtype_itemsize(a.dtype), ib = dtype_itemsize(b.dtype);
    return ia != ib ? ia > ib : a.name < b.name;
  });
  metadata["format"] = "pt";
  json header = json::object();
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (auto& spec : specs) {
    TORCH_CHECK(spec.name != "__metadata__", "tensor name '__metadata__' is reserved");
    const uint64_t size = spec.nbytes();
    header[spec.name] = {{"dtype", std::string(dtype_name(spec.dtype))},
                         {"shape", spec.shape},
                         {"data_offsets", {offset, offset + size}}};
    const auto saved = resume != nullptr ? resume->written.find(spec.name)
                                         : WrittenTensors::const_iterator();
    const bool written = resume != nullptr && saved != resume->written.end();
    const bool inserted =
        slots_.emplace(spec.name, Slot{spec, offset, written, written ? saved->second : ""})
            .second;
    TORCH_CHECK(inserted, "duplicate tensor name '", spec.name, "' in safetensors output");
    offset += size;
  }
  data_bytes_ = offset;
  std::string text = header.dump();
  // Pad with spaces so the data buffer starts 8-byte aligned, as the reference writer does.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  const uint64_t header_size = text.size();
  // A resumed file gets the same header again (the layout is the same).
  file_->write_at(0, &header_size, 8);
  file_->write_at(8, text.data(), text.size());
  data_start_ = 8 + header_size;
  if (resume != nullptr) verify_written();
}

void SafetensorsWriter::verify_written() const {
  const fs::path& path = file_->temp_path();
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes;
  for (const auto& [name, slot] : slots_) {
    if (!slot.written) continue;
    bytes.resize(slot.spec.nbytes());
    in.seekg(static_cast<std::streamoff>(data_start_ + slot.begin));
    const bool read = in.good() && in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    in.clear();
    if (!read || checksum_hex(bytes.data(), bytes.size()) != slot.checksum)
      throw Error(ErrorKind::StateConflict,
                  fmt::format("{}: tensor '{}' does not hold what the interrupted run wrote (the "
                              "file was {}); pass --restart to discard the saved state",
                              path.string(), name, read ? "changed" : "truncated"));
  }
}

void SafetensorsWriter::write(const std::string& name, const at::Tensor& tensor) {
  const auto it = slots_.find(name);
  TORCH_CHECK(it != slots_.end(), "tensor '", name, "' is not in the planned safetensors layout");
  Slot& slot = it->second;
  TORCH_CHECK(!slot.written, "tensor '", name, "' written twice");
  const at::Tensor host = tensor.to(at::kCPU).contiguous();
  TORCH_CHECK(dtype_from_scalar_type(host.scalar_type()) == slot.spec.dtype, "tensor '", name,
              "': dtype ", host.scalar_type(), " does not match planned ",
              dtype_name(slot.spec.dtype));
  TORCH_CHECK(host.sizes().vec() == slot.spec.shape, "tensor '", name, "': shape ", host.sizes(),
              " does not match planned ", at::IntArrayRef(slot.spec.shape));
  // In two halves, with a fault point between them: a crash mid-tensor (resume tests).
  const uint64_t size = slot.spec.nbytes(), half = size / 2;
  const auto* bytes = static_cast<const uint8_t*>(host.data_ptr());
  file_->write_at(data_start_ + slot.begin, bytes, half);
  fault_point("write-tensor");
  file_->write_at(data_start_ + slot.begin + half, bytes + half, size - half);
  slot.written = true;
  if (resumable_) slot.checksum = checksum_hex(bytes, size);
}

WrittenTensors SafetensorsWriter::written() const {
  WrittenTensors out;
  for (const auto& [name, slot] : slots_)
    if (slot.written) out.emplace(name, slot.checksum);
  return out;
}

void SafetensorsWriter::sync() { file_->sync(); }

void SafetensorsWriter::check_complete() const {
  for (const auto& [name, slot] : slots_)
    TORCH_CHECK(slot.written, "tensor '", name, "' was never written to ",
                file_->final_path().string());
}

void SafetensorsWriter::commit() {
  check_complete();
  file_->commit();
}

namespace {
std::string module_of(const std::string& tensor_name) {
  const auto dot = tensor_name.rfind('.');
  return dot == std::string::npos ? tensor_name : tensor_name.substr(0, dot);
}
}  // namespace

ShardedWriter::ShardedWriter(const fs::path& dir, std::vector<TensorSpec> specs,
                             Metadata metadata, uint64_t max_shard_bytes,
                             const ResumableWrite* resume)
    : dir_(dir) {
  TORCH_CHECK(max_shard_bytes > 0, "max_shard_bytes must be positive");
  // Split the ordered specs into runs of one module, then pack runs greedily into shards.
  std::vector<std::vector<TensorSpec>> shards;
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < specs.size();) {
    size_t j = i;
    uint64_t run_bytes = 0;
    while (j < specs.size() && module_of(specs[j].name) == module_of(specs[i].name))
      run_bytes += specs[j++].nbytes();
    if (shards.empty() || (shard_bytes > 0 && shard_bytes + run_bytes > max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    for (; i < j; ++i) shards.back().push_back(specs[i]);
    shard_bytes += run_bytes;
  }
  if (shards.empty()) shards.emplace_back();

  const size_t count = shards.size();
  for (size_t s = 0; s < count; ++s) {
    const std::string file_name =
        count == 1 ? "model.safetensors"
                   : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, count);
    for (const auto& spec : shards[s]) {
      TORCH_CHECK(shard_of_.emplace(spec.name, s).second, "duplicate tensor name '", spec.name,
                  "' in checkpoint output");
      total_bytes_ += spec.nbytes();
    }
    shards_.push_back(
        std::make_unique<SafetensorsWriter>(dir_ / file_name, shards[s], metadata, resume));
    shard_names_.push_back(file_name);
  }
}

void ShardedWriter::write(const std::string& name, const at::Tensor& tensor) {
  const auto it = shard_of_.find(name);
  TORCH_CHECK(it != shard_of_.end(), "tensor '", name, "' is not in the planned checkpoint");
  shards_[it->second]->write(name, tensor);
}

WrittenTensors ShardedWriter::written() const {
  WrittenTensors out;
  for (const auto& shard : shards_) out.merge(shard->written());
  return out;
}

void ShardedWriter::sync() {
  for (auto& shard : shards_) shard->sync();
}

void ShardedWriter::commit() {
  for (const auto& shard : shards_) shard->check_complete();  // publish all or nothing
  for (auto& shard : shards_) shard->commit();
  if (shards_.size() == 1) return;
  json weight_map = json::object();
  for (const auto& [name, shard] : shard_of_) weight_map[name] = shard_names_[shard];
  const json index = {{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map}};
  write_file_atomically(dir_ / "model.safetensors.index.json", index.dump(2) + "\n");
}

void save_safetensors(const fs::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      Metadata metadata) {
  std::vector<TensorSpec> specs;
  for (const auto& [name, tensor] : tensors) specs.push_back(TensorSpec::of(name, tensor));
  SafetensorsWriter writer(path, std::move(specs), std::move(metadata));
  for (const auto& [name, tensor] : tensors) writer.write(name, tensor);
  writer.commit();
}

}  // namespace sarqc

#include "sarqc/io/safetensors_reader.h"

#include <algorithm>
#include <cstring>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "sarqc/util/error.h"

namespace sarqc {
namespace {

using nlohmann::json;

std::string all_dtype_names() {
  std::string names;
  for (int i = 0; i <= static_cast<int>(Dtype::F64); ++i) {
    if (!names.empty()) names += ", ";
    names += dtype_name(static_cast<Dtype>(i));
  }
  return names;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Parses the header strictly: nlohmann keeps the last of duplicate keys silently, so duplicates
// are detected with the parser callback at every nesting level.
json parse_header(const std::string& where, const char* text, size_t size) {
  std::vector<std::set<std::string>> keys_per_object;
  std::string duplicate;
  json::parser_callback_t detect_duplicates = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys_per_object.emplace_back();
    if (event == json::parse_event_t::object_end && !keys_per_object.empty())
      keys_per_object.pop_back();
    if (event == json::parse_event_t::key && !keys_per_object.empty() && duplicate.empty() &&
        !keys_per_object.back().insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(text, text + size, detect_duplicates);
  } catch (const json::exception& e) {
    throw_bad_input(fmt::format("{}: header is not valid JSON: {}", where, e.what()));
  }
  if (!duplicate.empty())
    throw_bad_input(fmt::format("{}: header has duplicate key '{}'", where, duplicate));
  return header;
}

TensorInfo parse_entry(const std::string& where, const std::string& name, const json& entry) {
  const std::string tensor = fmt::format("{}: tensor '{}'", where, name);
  if (!entry.is_object())
    throw_bad_input(fmt::format("{}: entry must be an object with dtype, shape, data_offsets",
                                tensor));
  TensorInfo info;
  info.name = name;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string())
    throw_bad_input(fmt::format("{}: missing string field 'dtype'", tensor));
  const auto dtype = dtype_from_name(dtype_it->get<std::string>());
  if (!dtype)
    throw_bad_input(fmt::format("{}: unknown dtype '{}' (expected one of {})", tensor,
                                dtype_it->get<std::string>(), all_dtype_names()));
  info.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array())
    throw_bad_input(fmt::format("{}: missing array field 'shape'", tensor));
  // numel * itemsize must stay representable: cap at 2^62 bytes.
  const uint64_t max_elements = (uint64_t(1) << 62) / dtype_itemsize(info.dtype);
  uint64_t numel = 1;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned())
      throw_bad_input(fmt::format("{}: shape entries must be non-negative integers, got {}",
                                  tensor, dim.dump()));
    const uint64_t d = dim.get<uint64_t>();
    if (d != 0 && numel > max_elements / d)
      throw_bad_input(fmt::format("{}: shape {} is too large", tensor, shape_it->dump()));
    numel *= d;
    info.shape.push_back(static_cast<int64_t>(d));
  }

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned())
    throw_bad_input(fmt::format("{}: 'data_offsets' must be [begin, end] with non-negative "
                                "integers",
                                tensor));
  info.begin = (*offsets_it)[0].get<uint64_t>();
  info.end = (*offsets_it)[1].get<uint64_t>();
  if (info.begin > info.end)
    throw_bad_input(fmt::format("{}: data_offsets [{}, {}] has begin after end", tensor,
                                info.begin, info.end));
  const uint64_t expected = numel * dtype_itemsize(info.dtype);
  if (info.end - info.begin != expected)
    throw_bad_input(fmt::format("{}: data_offsets [{}, {}] span {} bytes but shape {} of {} needs "
                                "{} bytes",
                                tensor, info.begin, info.end, info.end - info.begin,
                                shape_text(info.shape), dtype_name(info.dtype), expected));
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& where, const json& entry) {
  if (!entry.is_object())
    throw_bad_input(fmt::format("{}: '__metadata__' must be an object of strings", where));
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : entry.items()) {
    if (!value.is_string())
      throw_bad_input(fmt::format("{}: '__metadata__' value of '{}' must be a string, got {}",
                                  where, key, value.dump()));
    metadata[key] = value.get<std::string>();
  }
  return metadata;
}

// The byte ranges, sorted by offset, must tile the data buffer exactly.
void check_coverage(const std::string& where, const std::vector<TensorInfo>& sorted,
                    uint64_t buffer_bytes) {
  uint64_t cursor = 0;
  const TensorInfo* previous = nullptr;
  for (const auto& t : sorted) {
    if (t.end > buffer_bytes)
      throw_bad_input(fmt::format("{}: tensor '{}' data_offsets [{}, {}] lie beyond the data "
                                  "buffer of {} bytes",
                                  where, t.name, t.begin, t.end, buffer_bytes));
    if (t.begin < cursor)
      throw_bad_input(fmt::format("{}: tensor '{}' [{}, {}) overlaps tensor '{}' [{}, {})", where,
                                  t.name, t.begin, t.end, previous->name, previous->begin,
                                  previous->end));
    if (t.begin > cursor)
      throw_bad_input(fmt::format("{}: {} unused bytes before tensor '{}' at offset {} (tensor "
                                  "data must be contiguous)",
                                  where, t.begin - cursor, t.name, t.begin));
    cursor = t.end;
    if (t.nbytes() > 0) previous = &t;
  }
  if (cursor != buffer_bytes)
    throw_bad_input(fmt::format("{}: {} trailing bytes after the last tensor (data buffer is {} "
                                "bytes, tensors cover {})",
                                where, buffer_bytes - cursor, buffer_bytes, cursor));
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile result;
  result.file_ = MappedFile::open(path);
  const std::string where = path.string();
  const uint64_t file_size = result.file_->size();
  if (file_size < 8)
    throw_bad_input(fmt::format("{}: file is {} bytes, too short for the 8-byte header length "
                                "(not a safetensors file?)",
                                where, file_size));
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, result.file_->data(), 8);  // little-endian host (x86-64, arm64)
  if (header_bytes > kMaxSafetensorsHeaderBytes)
    throw_bad_input(fmt::format("{}: header length {} exceeds the 100 MB limit (corrupt or not a "
                                "safetensors file)",
                                where, header_bytes));
  if (header_bytes > file_size - 8)
    throw_bad_input(fmt::format("{}: header length {} runs past the end of the {}-byte file "
                                "(truncated?)",
                                where, header_bytes, file_size));
  result.header_bytes_ = header_bytes;
  const char* header_text = reinterpret_cast<const char*>(result.file_->data() + 8);
  if (header_bytes == 0 || header_text[0] != '{')
    throw_bad_input(fmt::format("{}: header must be a JSON object starting with '{{'", where));

  const json header = parse_header(where, header_text, header_bytes);
  if (!header.is_object())
    throw_bad_input(fmt::format("{}: header must be a JSON object", where));
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__")
      result.metadata_ = parse_metadata(where, value);
    else
      result.tensors_.push_back(parse_entry(where, key, value));
  }
  std::sort(result.tensors_.begin(), result.tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
            });
  check_coverage(where, result.tensors_, file_size - 8 - header_bytes);
  for (size_t i = 0; i < result.tensors_.size(); ++i)
    result.index_.emplace(result.tensors_[i].name, i);
  return result;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::info(std::string_view name) const {
  const TensorInfo* found = find(name);
  if (found == nullptr)
    throw_bad_input(fmt::format("{}: no tensor named '{}'", path().string(), name));
  return *found;
}

at::Tensor SafetensorsFile::load(std::string_view name, c10::Device device) const {
  const TensorInfo& t = info(name);
  const auto scalar_type = to_scalar_type(t.dtype);
  if (!scalar_type)
    throw_bad_input(fmt::format("{}: tensor '{}' has dtype {}, which this libtorch build cannot "
                                "represent",
                                path().string(), t.name, dtype_name(t.dtype)));
  const auto options = at::TensorOptions().dtype(*scalar_type);
  if (t.nbytes() == 0) return at::empty(t.shape, options.device(device));

  const uint64_t file_offset = 8 + header_bytes_ + t.begin;
  file_->will_need(file_offset, t.nbytes());
  uint8_t* data = const_cast<uint8_t*>(file_->data()) + file_offset;
  // Some writers do not pad the header, so the data may be misaligned for its dtype.
  const bool aligned = reinterpret_cast<uintptr_t>(data) % dtype_itemsize(t.dtype) == 0;
  at::Tensor view;
  if (aligned) {
    auto keep_alive = file_;  // the tensor's deleter owns a reference to the mapping
    view = at::from_blob(data, t.shape, [keep_alive](void*) {}, options);
  } else {
    view = at::empty(t.shape, options);
    std::memcpy(view.data_ptr(), data, t.nbytes());
  }
  if (t.dtype == Dtype::BOOL) {
    // Bytes other than 0/1 are undefined behaviour for torch.bool.
    const auto* bytes = data;
    for (uint64_t i = 0; i < t.nbytes(); ++i)
      if (bytes[i] > 1)
        throw_bad_input(fmt::format("{}: BOOL tensor '{}' holds byte value {} (expected 0 or 1)",
                                    path().string(), t.name, int(bytes[i])));
  }
  if (device.is_cpu()) return view;
  return view.to(device);
}

}  // namespace sarqc

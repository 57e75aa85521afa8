#include "sarqc/pipeline/run_state.h"

#include "sarqc/pipeline/option_table.h"

#include <sys/stat.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <ctime>
#include <optional>
#include <set>

#include "sarqc/io/safetensors_reader.h"
#include "sarqc/io/safetensors_writer.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/util/checksum.h"
#include "sarqc/util/cpu_environment.h"
#include "sarqc/util/error.h"
#include "sarqc/util/fault_point.h"
#include "sarqc/util/file.h"
#include "sarqc/util/sha256.h"
#include "sarqc/version.h"

namespace sarqc {
namespace fs = std::filesystem;
namespace {

constexpr int kStateFormat = 2;  // 2: checksums of the written tensors and the streams

// Size and modification time: hashing a 140 GB checkpoint would take longer than many runs.
std::string file_identity(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "missing";
  char when[32];
  std::tm tm{};
  ::gmtime_r(&st.st_mtim.tv_sec, &tm);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{} bytes, modified {}.{:09d}Z", static_cast<long long>(st.st_size), when,
                     st.st_mtim.tv_nsec);
}

std::string stream_name(char which, size_t batch) { return fmt::format("{}.{:05d}", which, batch); }

}  // namespace

nlohmann::json run_fingerprint_items(const ModelWeights& weights, const QuantizeOptions& o,
                                     const std::string& calibration_sha256) {
  nlohmann::json items = nlohmann::json::object();
  items["sarqc version"] = kVersion;
  const std::string config = read_text_file(weights.dir() / "config.json");
  items["model config.json"] = "sha256 " + sha256_hex(config.data(), config.size());
  for (const auto& entry : fs::directory_iterator(weights.dir())) {
    const std::string name = entry.path().filename().string();
    const bool weights_file = entry.path().extension() == ".safetensors" ||
                              name == "model.safetensors.index.json";
    if (entry.is_regular_file() && weights_file)
      items["model file " + name] = file_identity(entry.path());
  }
  // Every option that changes the output: the option table says which (the version and the
  // options determine the preset's resolution).
  for (const OptionRow& row : quantize_option_table())
    if (row.reach & kInFingerprint) items["option " + row.name] = option_text(row.get(o));
  items["calibration"] = calibration_sha256.empty() ? "none" : "sha256 " + calibration_sha256;
  // Where the math runs: other kernels round differently.
  const char* core = blas_core_name();
  items["compute"] = fmt::format("{}, {}, {} threads{}", o.compute.device.str(),
                                 c10::toString(o.compute.dtype), at::get_num_threads(),
                                 core != nullptr ? fmt::format(", OpenBLAS {}", core) : "");
  return items;
}

std::vector<std::string> fingerprint_differences(const nlohmann::json& saved,
                                                 const nlohmann::json& now) {
  std::vector<std::string> diffs;
  auto text = [](const nlohmann::json& items, const std::string& key) {
    const auto it = items.find(key);
    return it == items.end() ? std::string("(none)")
                             : it->is_string() ? it->get<std::string>() : it->dump();
  };
  std::vector<std::string> keys;
  for (const auto& [key, value] : saved.items()) keys.push_back(key);
  for (const auto& [key, value] : now.items())
    if (!saved.contains(key)) keys.push_back(key);
  for (const auto& key : keys) {
    const std::string before = text(saved, key), after = text(now, key);
    if (before != after) diffs.push_back(fmt::format("{}: {} when saved, {} now", key, before, after));
  }
  return diffs;
}

std::string RunStateStore::streams_of_rank(const std::string& streams_file, int rank) {
  if (rank == 0 || streams_file.empty()) return streams_file;
  const std::string stem = streams_file.substr(0, streams_file.rfind(".safetensors"));
  return fmt::format("{}.rank-{}.safetensors", stem, rank);
}

std::optional<SavedRun> RunStateStore::read() const {
  const fs::path path = dir_ / "state.json";
  if (!fs::exists(path)) return std::nullopt;
  SavedRun run;
  try {
    const nlohmann::json j = nlohmann::json::parse(read_text_file(path));
    if (j.at("format").get<int>() != kStateFormat)
      throw Error(ErrorKind::StateConflict,
                  fmt::format("{}: state format {} is not this version's {}; pass --restart to "
                              "discard it",
                              path.string(), j.at("format").dump(), kStateFormat));
    run.fingerprint = j.at("fingerprint");
    run.next_layer = j.at("next_layer").get<int64_t>();
    run.layers = j.at("layers").get<int64_t>();
    run.any_reordered = j.at("any_reordered").get<bool>();
    run.written = j.at("written").get<WrittenTensors>();
    run.alpha_sampler = j.at("alpha_sampler").get<std::string>();
    run.objective = j.at("objective").get<std::string>();
    run.records = j.at("records");
    run.streams_file = j.at("streams_file").get<std::string>();
    run.ranks = j.value("ranks", 1);
  } catch (const nlohmann::json::exception& e) {
    throw_runtime(fmt::format("{}: unreadable saved state ({}); pass --restart to discard it",
                              path.string(), e.what()));
  }
  return run;
}

std::optional<SavedRun> RunStateStore::load() const {
  if (!fs::exists(dir_)) return std::nullopt;
  std::optional<SavedRun> run = read();
  if (!run) {
    for (const auto& entry : fs::directory_iterator(dir_)) remove_tree(entry.path());
    return std::nullopt;
  }
  // Every rank's streams file (the world size of the run that saved them, which a rerun with
  // another one is refused for: its files stay).
  std::set<std::string> keep = {"state.json"};
  for (int r = 0; r < run->ranks && !run->streams_file.empty(); ++r) {
    const std::string name = streams_of_rank(run->streams_file, r);
    if (!fs::exists(dir_ / name))
      throw_runtime(fmt::format("{}: the streams file {} it names is missing; pass --restart to "
                                "discard the state",
                                (dir_ / "state.json").string(), name));
    keep.insert(name);
  }
  for (const auto& entry : fs::directory_iterator(dir_))  // leftovers of an interrupted save
    if (!keep.count(entry.path().filename().string())) remove_tree(entry.path());
  return run;
}

void RunStateStore::save_streams(SavedRun& run, const HiddenBatches& q,
                                 const HiddenBatches* fp) const {
  run.streams_file.clear();
  if (q.batches.empty()) return;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (size_t b = 0; b < q.batches.size(); ++b) tensors.emplace_back(stream_name('q', b), q.batches[b]);
  if (fp != nullptr)
    for (size_t b = 0; b < fp->batches.size(); ++b)
      tensors.emplace_back(stream_name('f', b), fp->batches[b]);
  run.streams_file = fmt::format("streams-{:05d}.safetensors", run.next_layer);
  // Each tensor's checksum in the file's metadata: restore_streams refuses altered bytes.
  // One batch on the host at a time (the writer copies each again as it writes it).
  Metadata checksums;
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor host = tensor.to(at::kCPU).contiguous();
    checksums["checksum " + name] =
        checksum_hex(host.data_ptr(), host.numel() * host.element_size());
  }
  // synced, renamed, folder synced
  save_safetensors(dir_ / streams_of_rank(run.streams_file, rank_), tensors, checksums);
}

void RunStateStore::save_state(const SavedRun& run) const {
  const nlohmann::json j = {{"format", kStateFormat},
                            {"fingerprint", run.fingerprint},
                            {"next_layer", run.next_layer},
                            {"layers", run.layers},
                            {"any_reordered", run.any_reordered},
                            {"written", run.written},
                            {"alpha_sampler", run.alpha_sampler},
                            {"objective", run.objective},
                            {"records", run.records},
                            {"streams_file", run.streams_file},
                            {"ranks", run.ranks}};
  write_file_atomically(dir_ / "state.json", j.dump(1) + "\n");
}

void RunStateStore::remove_streams(const std::string& previous, const SavedRun& run) const {
  if (previous.empty() || previous == run.streams_file) return;
  fs::remove(dir_ / streams_of_rank(previous, rank_));
  fsync_directory(dir_);
}

void RunStateStore::save(SavedRun& run, const HiddenBatches& q, const HiddenBatches* fp) const {
  const std::string previous = run.streams_file;
  save_streams(run, q, fp);
  fault_point("save-state");
  save_state(run);
  fault_point("save-state");
  remove_streams(previous, run);
}

void RunStateStore::restore_streams(const SavedRun& run, HiddenBatches& q,
                                    HiddenBatches* fp) const {
  const fs::path path = dir_ / streams_of_rank(run.streams_file, rank_);
  if (run.streams_file.empty())
    throw_runtime(fmt::format("{}: the saved state has no activation streams; pass --restart to "
                              "discard it",
                              (dir_ / "state.json").string()));
  // A streams file that cannot be read is a state this run may not use: refused (exit 5),
  // never discarded as if it were the user's bad input.
  auto refuse = [&](const std::string& why) {
    throw Error(ErrorKind::StateConflict,
                fmt::format("{}: {}; pass --restart to discard the saved state", path.string(),
                            why));
  };
  std::optional<SafetensorsFile> opened;
  try {
    opened.emplace(SafetensorsFile::open(path));
  } catch (const Error& e) {
    refuse(fmt::format("the saved activation streams cannot be read ({})", e.what()));
  }
  const SafetensorsFile& file = *opened;
  for (const auto& [which, target] : {std::pair{'q', &q}, std::pair{'f', fp}}) {
    if (target == nullptr) continue;
    for (size_t b = 0; b < target->batches.size(); ++b) {
      at::Tensor& batch = target->batches[b];
      const std::string name = stream_name(which, b);
      const TensorInfo* info = file.find(name);
      if (info == nullptr || info->shape != batch.sizes().vec() ||
          info->dtype != dtype_from_scalar_type(batch.scalar_type()))
        refuse(fmt::format("tensor '{}' is missing or not {}", name,
                           c10::str(batch.scalar_type(), " ", batch.sizes())));
      at::Tensor saved;  // a view of the mapped file
      try {
        saved = file.load(name, at::kCPU);
      } catch (const Error& e) {
        refuse(fmt::format("tensor '{}' cannot be read ({})", name, e.what()));
      }
      const auto recorded = file.metadata().find("checksum " + name);
      if (recorded == file.metadata().end() ||
          checksum_hex(saved.data_ptr(), saved.numel() * saved.element_size()) !=
              recorded->second)
        refuse(fmt::format("tensor '{}' does not hold what the interrupted run saved (the file "
                           "was changed)",
                           name));
      // A copy: the file is deleted at the next save, and batches are replaced in place.
      batch = batch.device().is_cpu() ? saved.clone() : saved.to(batch.device());
    }
  }
}

}  // namespace sarqc

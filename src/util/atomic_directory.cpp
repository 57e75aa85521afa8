#include "sarqc/util/atomic_directory.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <fmt/format.h>

#include "sarqc/util/error.h"
#include "sarqc/util/file.h"

namespace sarqc {
namespace fs = std::filesystem;
namespace {

// `path` without trailing separators or "." components.
fs::path normalised(const fs::path& path) {
  fs::path p = path.lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

// Whether `inner` is `outer` or lies inside it (both absolute and canonical).
bool within(const fs::path& inner, const fs::path& outer) {
  const fs::path rel = inner.lexically_relative(outer);
  return !rel.empty() && *rel.begin() != "..";
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

void remove_dead_partial_folders(const fs::path& parent, const std::string& name) {
  const std::string prefix = "." + name + ".partial-";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(parent, ec)) {
    const std::string entry_name = entry.path().filename().string();
    if (entry_name.rfind(prefix, 0) != 0) continue;
    const std::string digits = entry_name.substr(prefix.size());
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stoll(digits));
    if (pid == ::getpid() || process_alive(pid)) continue;
    std::error_code remove_ec;
    remove_tree_noexcept(entry.path(), remove_ec);
    if (!remove_ec) spdlog::info("removed {}, left by an interrupted run", entry.path().string());
  }
}

fs::path outermost_missing(const fs::path& folder) {
  fs::path outermost;
  for (fs::path up = folder; !up.empty() && !fs::exists(up); up = up.parent_path()) {
    outermost = up;
    if (up == up.root_path() || !up.has_parent_path()) break;
  }
  return outermost;
}

void remove_created_parents(const fs::path& innermost, const fs::path& outermost) {
  if (outermost.empty()) return;
  std::error_code ec;
  for (fs::path up = innermost; !up.empty(); up = up.parent_path()) {
    if (!fs::remove(up, ec) || ec) break;
    if (up == outermost) break;
  }
}

fs::path checked_output_folder(const std::string& flag, const fs::path& requested,
                               const std::vector<fs::path>& inputs) {
  if (requested.empty()) throw_usage(fmt::format("{}: expected a folder path, got ''", flag));
  const fs::path out = normalised(requested);
  const std::string name = out.filename().string();
  if (name.empty() || name == "." || name == "..")
    throw_usage(fmt::format("{} '{}': must name a folder to create, not the current, parent or "
                            "root folder",
                            flag, requested.string()));
  std::error_code ec;
  if (fs::is_symlink(out, ec) && !fs::exists(out, ec))
    throw_usage(fmt::format("{} '{}': is a dangling symbolic link", flag, requested.string()));
  if (fs::exists(out, ec) && !fs::is_directory(out, ec))
    throw_usage(fmt::format("{} '{}': exists and is not a folder", flag, requested.string()));
  for (fs::path up = fs::absolute(out).parent_path(); !up.empty(); up = up.parent_path()) {
    if (fs::exists(up, ec) && !fs::is_directory(up, ec))
      throw_usage(fmt::format("{} '{}': {} is not a folder", flag, requested.string(),
                              up.string()));
    if (up == up.root_path()) break;
  }
  const fs::path out_canonical = fs::weakly_canonical(fs::absolute(out), ec);
  for (const auto& input : inputs) {
    if (input.empty() || !fs::exists(input, ec)) continue;
    const fs::path in = fs::canonical(input, ec);
    if (ec) continue;
    if (within(in, out_canonical) || within(out_canonical, in))
      throw_usage(fmt::format("{} '{}': the output may not be, contain or lie inside the input "
                              "'{}'",
                              flag, requested.string(), input.string()));
  }
  return out;
}

AtomicDirectory::AtomicDirectory(fs::path final_path, Existing existing)
    : final_(normalised(final_path)) {
  if (fs::exists(final_)) {
    if (existing == Existing::Refuse)
      throw_usage(fmt::format("{}: output folder exists; pass --force to replace it",
                              final_.string()));
    if (existing == Existing::RefuseFilled && !fs::is_empty(final_))
      throw_usage(fmt::format("{}: output folder exists and is not empty", final_.string()));
  }
  const fs::path parent = final_.has_parent_path() ? final_.parent_path() : fs::path(".");
  created_ = outermost_missing(parent);
  fs::create_directories(parent);
  remove_dead_partial_folders(parent, final_.filename().string());
  partial_ = parent / fmt::format(".{}.partial-{}", final_.filename().string(), ::getpid());
  remove_tree(partial_);
  fs::create_directories(partial_);
}

AtomicDirectory::~AtomicDirectory() {
  if (published_) return;
  std::error_code ec;
  remove_tree_noexcept(partial_, ec);
  remove_created_parents(partial_.parent_path(), created_);
}

void AtomicDirectory::publish() {
  fs::path old;
  if (fs::exists(final_)) {  // moved aside first, deleted only once the new one is in place
    old = partial_.parent_path() / fmt::format(".{}.old-{}", final_.filename().string(), ::getpid());
    fs::rename(final_, old);
  }
  fs::rename(partial_, final_);
  published_ = true;
  std::error_code ec;
  if (!old.empty()) remove_tree_noexcept(old, ec);
}

}  // namespace sarqc

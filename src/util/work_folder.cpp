#include "sarqc/util/work_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "sarqc/util/atomic_directory.h"
#include "sarqc/util/error.h"
#include "sarqc/util/fault_point.h"
#include "sarqc/util/file.h"

namespace sarqc {
namespace fs = std::filesystem;
namespace {

// fsync of every file in `dir` and of `dir` itself: files copied with fs::copy_file are not
// synced by anyone else.
void sync_tree(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
      const std::string reason = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      throw_runtime(fmt::format("{}: fsync failed: {}", entry.path().string(), reason));
    }
    ::close(fd);
  }
  fsync_directory(dir);
}

}  // namespace

fs::path WorkFolder::root_for(const fs::path& final_path) {
  const fs::path parent = final_path.has_parent_path() ? final_path.parent_path() : fs::path(".");
  return parent / ("." + final_path.filename().string() + ".sarqc-work");
}

WorkFolder::WorkFolder(fs::path final_path, Existing existing) : final_(std::move(final_path)) {
  const fs::path parent = final_.has_parent_path() ? final_.parent_path() : fs::path(".");
  root_ = root_for(final_);
  if (fs::is_directory(parent)) {  // leftovers that hold nothing to resume, whatever happens next
    remove_dead_partial_folders(parent, final_.filename().string());
    const std::string done_prefix = root_.filename().string() + ".done-";
    for (const auto& entry : fs::directory_iterator(parent))  // published, not yet deleted
      if (entry.path().filename().string().rfind(done_prefix, 0) == 0) remove_tree(entry.path());
  }
  found_ = fs::exists(root_);
  keep_ = found_;  // an earlier run's folder is only ever emptied by reset()
  if (fs::exists(final_) && existing == Existing::Refuse && !publish_pending())
    throw_usage(fmt::format("{}: output folder exists; pass --force to replace it",
                            final_.string()));
  created_ = outermost_missing(parent);
  fs::create_directories(root_);
  const fs::path lock = root_ / "lock";
  lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    throw_runtime(fmt::format("{}: cannot create: {}", lock.string(), std::strerror(errno)));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    keep_ = true;  // it belongs to the other process
    throw_usage(fmt::format("{}: another sarqc process is writing this output (its work folder "
                            "{} is locked)",
                            final_.string(), root_.string()));
  }
  if (publish_pending()) return;  // out/ may already be the final folder
  fs::create_directories(output());
  fs::create_directories(state());
  // Temporary files of atomic writes the killed process had begun (AtomicFileWriter's
  // "<name>.tmp.<pid>"; no one else writes here while we hold the lock).
  for (const auto& entry : fs::directory_iterator(output()))
    if (entry.path().filename().string().find(".tmp.") != std::string::npos)
      fs::remove(entry.path());
}

WorkFolder::~WorkFolder() {
  if (!published_ && !keep_) {
    std::error_code ec;
    remove_tree_noexcept(root_, ec);
    remove_created_parents(root_.parent_path(), created_);
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool WorkFolder::publish_pending() const { return fs::exists(root_ / "publishing"); }

void WorkFolder::reset() {
  remove_tree(output());
  remove_tree(state());
  fs::remove(root_ / "publishing");
  remove_tree(root_ / "replaced");
  fs::create_directories(output());
  fs::create_directories(state());
  keep_ = false;
}

void WorkFolder::publish() {
  const fs::path parent = root_.parent_path();
  const fs::path replaced = root_ / "replaced";
  if (!publish_pending()) {
    sync_tree(output());
    write_file_atomically(root_ / "publishing", final_.string() + "\n");
    keep_ = true;  // from here on only a (re)run's publish() may finish the job
  }
  fault_point("publish");
  if (fs::exists(output())) {
    if (fs::exists(final_)) {  // --force: moved aside, deleted once the new one is in place
      remove_tree(replaced);
      fs::rename(final_, replaced);
      fsync_directory(parent);
      fault_point("publish");
    }
    fs::rename(output(), final_);
    fsync_directory(parent);
  }
  fault_point("publish");
  // Renamed away first, so that a crash while deleting leaves no work folder a rerun would
  // mistake for an interrupted run (the next run deletes such a leftover).
  const fs::path done = parent / fmt::format("{}.done-{}", root_.filename().string(), ::getpid());
  fs::rename(root_, done);
  fsync_directory(parent);
  published_ = true;
  remove_tree(done);
}

}  // namespace sarqc

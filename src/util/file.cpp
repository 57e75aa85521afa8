#include "sarqc/util/file.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "sarqc/util/error.h"
#include "sarqc/util/fault_point.h"

namespace sarqc {
namespace fs = std::filesystem;

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

void fsync_directory(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    throw_runtime(fmt::format("{}: cannot open folder to sync: {}", dir.string(), errno_text()));
  // Some file systems cannot sync a folder (EINVAL): their renames are as durable as they get.
  const bool ok = ::fsync(fd) == 0 || errno == EINVAL || errno == ENOTSUP;
  const std::string reason = ok ? "" : errno_text();
  ::close(fd);
  if (!ok) throw_runtime(fmt::format("{}: fsync failed: {}", dir.string(), reason));
}

std::shared_ptr<const MappedFile> MappedFile::open(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_bad_input(fmt::format("{}: cannot open: {}", path.string(), errno_text()));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_bad_input(fmt::format("{}: {}", path.string(),
                                S_ISDIR(st.st_mode) ? "is a directory, expected a file"
                                                    : "not a regular file"));
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<uint64_t>(st.st_size);
  if (file->size_ > 0) {
    void* addr = ::mmap(nullptr, file->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const std::string reason = errno_text();
      ::close(fd);
      throw_runtime(fmt::format("{}: cannot memory-map: {}", path.string(), reason));
    }
    file->data_ = static_cast<uint8_t*>(addr);
    ::madvise(addr, file->size_, MADV_RANDOM);  // advice only: failure is harmless
  }
  ::close(fd);  // the mapping keeps the file alive
  return file;
}

void MappedFile::will_need(uint64_t offset, uint64_t length) const {
  if (length == 0 || offset >= size_) return;
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t begin = offset / page * page;
  const uint64_t end = std::min(size_, offset + length);
  ::madvise(data_ + begin, end - begin, MADV_WILLNEED);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

std::string read_text_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw_bad_input(fmt::format("{}: is a directory, expected a file", path.string()));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_bad_input(fmt::format("{}: cannot open: {}", path.string(), errno_text()));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw_bad_input(fmt::format("{}: read error", path.string()));
  return buffer.str();
}

AtomicFileWriter::AtomicFileWriter(fs::path final_path) : final_path_(std::move(final_path)) {
  temp_path_ = final_path_;
  temp_path_ += fmt::format(".tmp.{}", ::getpid());
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw_runtime(fmt::format("{}: cannot create: {}", temp_path_.string(), errno_text()));
}

AtomicFileWriter::AtomicFileWriter(fs::path final_path, fs::path temp_path, bool keep_existing)
    : final_path_(std::move(final_path)), temp_path_(std::move(temp_path)),
      keep_uncommitted_(true) {
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (keep_existing ? 0 : O_TRUNC),
               0644);
  if (fd_ < 0)
    throw_runtime(fmt::format("{}: cannot open: {}", temp_path_.string(), errno_text()));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !keep_uncommitted_) ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::sync() {
  if (fd_ >= 0 && ::fsync(fd_) != 0)
    throw_runtime(fmt::format("{}: fsync failed: {}", temp_path_.string(), errno_text()));
}

void AtomicFileWriter::write_at(uint64_t offset, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd_, bytes, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_runtime(fmt::format("{}: write failed: {}", temp_path_.string(), errno_text()));
    }
    bytes += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  if (committed_) return;
  if (::fsync(fd_) != 0)
    throw_runtime(fmt::format("{}: fsync failed: {}", temp_path_.string(), errno_text()));
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw_runtime(fmt::format("{}: close failed: {}", temp_path_.string(), errno_text()));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0)
    throw_runtime(fmt::format("cannot rename {} to {}: {}", temp_path_.string(),
                              final_path_.string(), errno_text()));
  committed_ = true;
  fsync_directory(final_path_.parent_path());
}

namespace {
int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path) == 0 ? 0 : errno;
}
}  // namespace

bool remove_tree_noexcept(const fs::path& path, std::error_code& ec) {
  ec.clear();
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return true;
    ec = std::error_code(errno, std::generic_category());
    return false;
  }
  const int rc = ::nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS);
  if (rc == 0) return true;
  ec = std::error_code(rc > 0 ? rc : errno, std::generic_category());
  return false;
}

void remove_tree(const fs::path& path) {
  std::error_code ec;
  if (!remove_tree_noexcept(path, ec))
    throw_runtime(fmt::format("{}: cannot delete: {}", path.string(), ec.message()));
}

void write_file_atomically(const fs::path& path, std::string_view content) {
  AtomicFileWriter writer(path);
  writer.write_at(0, content.data(), content.size());
  fault_point("write-file");  // written under the temporary name, not yet renamed
  writer.commit();
}

}  // namespace sarqc

#pragma once
// File primitives: memory-mapped input and atomically published output.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace sarqc {

// A whole file mapped copy-on-write (MAP_PRIVATE): pages are read only when touched, so a tensor
// view costs no I/O until used, and an in-place write to such a view changes memory, never the
// file. Errors name the file.
class MappedFile {
 public:
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Asks the kernel to read [offset, offset + length) now, and nothing around it: the mapping is
  // advised MADV_RANDOM at open, so speculative read-ahead (8 MiB on some disks) never pulls in
  // the neighbouring tensors of other layers.
  void will_need(uint64_t offset, uint64_t length) const;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Reads a whole (small) text file such as config.json. Throws a bad-input error naming the file.
std::string read_text_file(const std::filesystem::path& path);

// Writes to "<final>.tmp.<pid>" beside the final path; commit() flushes to disk and renames, so a
// crash or exception never leaves a file under the final name. Destroying an uncommitted writer
// deletes the temporary file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path final_path);
  // Resumable: the temporary file is `temp_path`; with keep_existing an existing one is reopened
  // as it is (a rerun continues writing into it) and kept when the writer is destroyed
  // uncommitted.
  AtomicFileWriter(std::filesystem::path final_path, std::filesystem::path temp_path,
                   bool keep_existing);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write_at(uint64_t offset, const void* data, size_t size);
  void sync();  // fsync: what was written so far is on disk
  void commit();
  const std::filesystem::path& final_path() const { return final_path_; }
  const std::filesystem::path& temp_path() const { return temp_path_; }

 private:
  std::filesystem::path final_path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  bool keep_uncommitted_ = false;
};

// fsync of a folder: makes renames and removals of its entries durable. Throws on failure.
void fsync_directory(const std::filesystem::path& dir);

void write_file_atomically(const std::filesystem::path& path, std::string_view content);

// Deletes `path` and everything below it, without following symbolic links; nothing to do when
// it does not exist. Not std::filesystem::remove_all: PyTorch 2.11's libtorch.so exports its own
// copy of that function, which the dynamic linker then binds for the whole process and which
// crashes (a null call) when used from here. remove_tree_noexcept returns false and sets `ec`
// instead of throwing a runtime Error.
void remove_tree(const std::filesystem::path& path);
bool remove_tree_noexcept(const std::filesystem::path& path, std::error_code& ec);

}  // namespace sarqc

#pragma once
// An output folder built under a temporary name beside its final path and renamed into place by
// publish(), so a failure at any point leaves neither a half-written folder nor a changed old
// one. Destroying an unpublished AtomicDirectory deletes the temporary folder and the parent
// folders it created. Leftovers of runs that were killed (their process is gone) are removed by
// the next AtomicDirectory for the same path.
#include <filesystem>
#include <string>
#include <vector>

namespace sarqc {

// The folder an output flag names, normalised (no trailing separator) and checked before any
// work: not empty, not ".", ".." or the root, not a dangling symbolic link, no ancestor that is
// a file, and neither equal to, inside, nor containing any of `inputs` (files or folders that
// exist; others are skipped). Usage errors name `flag`.
std::filesystem::path checked_output_folder(const std::string& flag,
                                            const std::filesystem::path& requested,
                                            const std::vector<std::filesystem::path>& inputs);

// Removes the ".NAME.partial-PID" folders beside parent/NAME whose process is gone: leftovers of
// runs that were killed (AtomicDirectory; quantize before it could resume).
void remove_dead_partial_folders(const std::filesystem::path& parent, const std::string& name);

// The outermost of `folder` and its ancestors that do not exist yet (what create_directories
// would make), or empty when `folder` exists.
std::filesystem::path outermost_missing(const std::filesystem::path& folder);
// Removes `innermost` and its ancestors up to `outermost` while they are empty: the parents made
// for an output whose run failed. Nothing when `outermost` is empty.
void remove_created_parents(const std::filesystem::path& innermost,
                            const std::filesystem::path& outermost);

class AtomicDirectory {
 public:
  enum class Existing {
    Refuse,       // an existing folder is a usage error ("pass --force")
    RefuseFilled, // an existing empty folder is replaced, a non-empty one refused
    Replace,      // an existing folder is replaced at publish()
  };
  AtomicDirectory(std::filesystem::path final_path, Existing existing);
  ~AtomicDirectory();
  AtomicDirectory(const AtomicDirectory&) = delete;
  AtomicDirectory& operator=(const AtomicDirectory&) = delete;

  const std::filesystem::path& path() const { return partial_; }  // write here
  void publish();

 private:
  std::filesystem::path final_, partial_;
  std::filesystem::path created_;  // the outermost parent folder this object created, if any
  bool published_ = false;
};

}  // namespace sarqc

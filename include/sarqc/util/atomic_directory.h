#pragma once
// An output folder built under a temporary name beside its final path and renamed into place by
// publish(), so a failure at any point leaves neither a half-written folder nor a changed old
// one. Destroying an unpublished AtomicDirectory deletes the temporary folder.
#include <filesystem>

namespace sarqc {

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
  bool published_ = false;
};

}  // namespace sarqc

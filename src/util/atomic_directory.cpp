#include "sarqc/util/atomic_directory.h"

#include <unistd.h>

#include <fmt/format.h>

#include "sarqc/util/error.h"

namespace sarqc {
namespace fs = std::filesystem;

AtomicDirectory::AtomicDirectory(fs::path final_path, Existing existing)
    : final_(std::move(final_path)) {
  if (fs::exists(final_)) {
    if (existing == Existing::Refuse)
      throw_usage(fmt::format("{}: output folder exists; pass --force to replace it",
                              final_.string()));
    if (existing == Existing::RefuseFilled && !fs::is_empty(final_))
      throw_usage(fmt::format("{}: output folder exists and is not empty", final_.string()));
  }
  const fs::path parent = final_.has_parent_path() ? final_.parent_path() : fs::path(".");
  fs::create_directories(parent);
  partial_ = parent / fmt::format(".{}.partial-{}", final_.filename().string(), ::getpid());
  fs::remove_all(partial_);
  fs::create_directories(partial_);
}

AtomicDirectory::~AtomicDirectory() {
  std::error_code ec;
  if (!published_) fs::remove_all(partial_, ec);
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
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace sarqc

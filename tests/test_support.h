#pragma once
// Helpers shared by the tests: fixture location, temporary folders, error expectations.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "sarqc/util/error.h"
#include "sarqc/util/file.h"

namespace sarqc::test {

namespace fs = std::filesystem;

// ../shared/fixtures beside the repository, or $SARQC_FIXTURES.
inline fs::path fixtures_dir() {
  if (const char* env = std::getenv("SARQC_FIXTURES"); env != nullptr && *env != '\0')
    return env;
  return SARQC_DEFAULT_FIXTURES_DIR;
}

inline fs::path fixture_model(const std::string& name) { return fixtures_dir() / "models" / name; }
inline fs::path fixture_text(const std::string& name) { return fixtures_dir() / "text" / name; }

#define SARQC_REQUIRE_FIXTURES()                                                             \
  do {                                                                                       \
    if (!std::filesystem::exists(::sarqc::test::fixture_model("stories260K") / "config.json")) \
      GTEST_SKIP() << "fixtures not found at " << ::sarqc::test::fixtures_dir()              \
                   << " (set SARQC_FIXTURES to the shared/fixtures folder)";                 \
  } while (0)

// A fresh folder removed at the end of the test. It lives under the working directory (the build
// tree), not /tmp, so that page-cache behaviour is that of a real disk.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::current_path() /
            ("sarqc-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    remove_tree(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    remove_tree_noexcept(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Runs fn, expects a sarqc::Error of `kind` whose message contains `needle`; returns the message.
template <typename Fn>
std::string expect_error(Fn&& fn, ErrorKind kind, const std::string& needle) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos)
        << "error message must be one line: " << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected sarqc::Error containing '" << needle << "', got " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected sarqc::Error containing '" << needle << "', nothing was thrown";
  return {};
}

template <typename Fn>
std::string expect_bad_input(Fn&& fn, const std::string& needle) {
  return expect_error(std::forward<Fn>(fn), ErrorKind::BadInput, needle);
}

}  // namespace sarqc::test

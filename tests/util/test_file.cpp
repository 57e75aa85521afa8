#include <gtest/gtest.h>

#include <stdexcept>

#include "sarqc/util/file.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;

size_t entries_in(const fs::path& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

TEST(AtomicFileWriter, FileAppearsOnlyAfterCommit) {
  test::TempDir dir;
  const fs::path target = dir / "out.bin";
  AtomicFileWriter writer(target);
  writer.write_at(4, "5678", 4);
  writer.write_at(0, "1234", 4);
  EXPECT_FALSE(fs::exists(target));
  EXPECT_TRUE(fs::exists(writer.temp_path()));
  writer.commit();
  EXPECT_EQ(test::read_bytes(target), "12345678");
  EXPECT_EQ(entries_in(dir.path()), 1u);  // no temporary left behind
}

TEST(AtomicFileWriter, AbandonedWriterLeavesNothingAndKeepsOldFile) {
  test::TempDir dir;
  const fs::path target = dir / "out.bin";
  test::write_bytes(target, "old");
  try {
    AtomicFileWriter writer(target);
    writer.write_at(0, "new content", 11);
    throw std::runtime_error("interrupted");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(test::read_bytes(target), "old");
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

TEST(MappedFile, WritesToTheMappingNeverReachTheFile) {
  test::TempDir dir;
  test::write_bytes(dir / "f", "abcdef");
  auto file = MappedFile::open(dir / "f");
  ASSERT_EQ(file->size(), 6u);
  const_cast<uint8_t*>(file->data())[0] = 'X';  // copy-on-write page
  EXPECT_EQ(test::read_bytes(dir / "f"), "abcdef");
}

TEST(MappedFile, MissingFileIsBadInput) {
  test::expect_bad_input([] { MappedFile::open("/nonexistent/file.safetensors"); },
                         "/nonexistent/file.safetensors: cannot open");
}

TEST(MappedFile, EmptyFileMapsToZeroBytes) {
  test::TempDir dir;
  test::write_bytes(dir / "empty", "");
  EXPECT_EQ(MappedFile::open(dir / "empty")->size(), 0u);
}

}  // namespace
}  // namespace sarqc

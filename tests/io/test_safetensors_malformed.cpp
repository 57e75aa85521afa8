// Malformed safetensors files and checkpoint folders: each must be rejected at open time with its
// own one-line error naming the file, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/checkpoint.h"
#include "sarqc/io/safetensors_reader.h"
#include "sarqc/io/safetensors_writer.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;

std::string with_length(uint64_t length, const std::string& rest) {
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &length, 8);
  return bytes + rest;
}

// A file whose header is `header` followed by `data_bytes` zero bytes.
std::string file_with_header(const std::string& header, size_t data_bytes) {
  return with_length(header.size(), header) + std::string(data_bytes, '\0');
}

struct MalformedCase {
  const char* label;
  std::string bytes;
  const char* expected;  // a fragment of the error message
};

std::vector<MalformedCase> malformed_cases() {
  const std::string f32_3 = R"("dtype":"F32","shape":[3],"data_offsets":[0,12])";
  return {
      {"empty file", "", "too short for the 8-byte header length"},
      {"five bytes", "abcde", "too short for the 8-byte header length"},
      {"header beyond file", with_length(1000, "{}"), "runs past the end of the 10-byte file"},
      {"header over 100 MB", with_length(200'000'000, "{}"), "exceeds the 100 MB limit"},
      {"header not an object", file_with_header("[1,2]", 0), "must be a JSON object starting"},
      {"invalid JSON", file_with_header(R"({"w": )", 0), "header is not valid JSON"},
      {"garbage after JSON", file_with_header("{}xyz", 0), "header is not valid JSON"},
      {"invalid UTF-8", file_with_header("{\"w\xff\":1}", 0), "header is not valid JSON"},
      {"duplicate tensor", file_with_header("{\"w\":{" + f32_3 + "},\"w\":{" + f32_3 + "}}", 12),
       "duplicate key 'w'"},
      {"duplicate field", file_with_header(R"({"w":{"dtype":"F32","dtype":"F32","shape":[3],"data_offsets":[0,12]}})", 12),
       "duplicate key 'dtype'"},
      {"entry not an object", file_with_header(R"({"w":5})", 0), "entry must be an object"},
      {"missing dtype", file_with_header(R"({"w":{"shape":[3],"data_offsets":[0,12]}})", 12),
       "missing string field 'dtype'"},
      {"unknown dtype", file_with_header(R"({"w":{"dtype":"F33","shape":[3],"data_offsets":[0,12]}})", 12),
       "unknown dtype 'F33'"},
      {"shape missing", file_with_header(R"({"w":{"dtype":"F32","data_offsets":[0,12]}})", 12),
       "missing array field 'shape'"},
      {"negative dimension", file_with_header(R"({"w":{"dtype":"F32","shape":[-3],"data_offsets":[0,12]}})", 12),
       "shape entries must be non-negative integers, got -3"},
      {"fractional dimension", file_with_header(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,12]}})", 12),
       "shape entries must be non-negative integers, got 1.5"},
      {"overflowing shape", file_with_header(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,12]}})", 12),
       "is too large"},
      {"offsets missing", file_with_header(R"({"w":{"dtype":"F32","shape":[3]}})", 12),
       "'data_offsets' must be [begin, end]"},
      {"offsets not a pair", file_with_header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,6,12]}})", 12),
       "'data_offsets' must be [begin, end]"},
      {"begin after end", file_with_header(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[12,0]}})", 12),
       "has begin after end"},
      {"shape/offset mismatch", file_with_header(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "span 8 bytes but shape [3] of F32 needs 12 bytes"},
      {"offsets beyond data", file_with_header("{\"w\":{" + f32_3 + "}}", 4),
       "lie beyond the data buffer of 4 bytes"},
      {"overlapping tensors", file_with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlaps tensor 'a'"},
      {"hole between tensors", file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12),
       "4 unused bytes before tensor 'b'"},
      {"trailing bytes", file_with_header("{\"w\":{" + f32_3 + "}}", 20),
       "8 trailing bytes after the last tensor"},
      {"metadata not an object", file_with_header(R"({"__metadata__":[1]})", 0),
       "'__metadata__' must be an object of strings"},
      {"metadata value not a string", file_with_header(R"({"__metadata__":{"format":1}})", 0),
       "'__metadata__' value of 'format' must be a string"},
  };
}

class MalformedSafetensors : public ::testing::TestWithParam<size_t> {};

TEST_P(MalformedSafetensors, RejectedAtOpenWithItsOwnMessage) {
  const MalformedCase c = malformed_cases()[GetParam()];
  SCOPED_TRACE(c.label);
  test::TempDir dir;
  const fs::path path = dir / "model.safetensors";
  test::write_bytes(path, c.bytes);
  const std::string message =
      test::expect_bad_input([&] { SafetensorsFile::open(path); }, c.expected);
  EXPECT_EQ(message.rfind(path.string(), 0), 0u) << "message must start with the file name";
  // The checkpoint layer (what `sarqc inspect` opens) rejects it the same way.
  test::expect_bad_input([&] { Checkpoint::open(dir.path()); }, c.expected);
}

INSTANTIATE_TEST_SUITE_P(AllCases, MalformedSafetensors,
                         ::testing::Range<size_t>(0, malformed_cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           std::string name = malformed_cases()[info.param].label;
                           for (char& ch : name)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });

TEST(MalformedSafetensorsMessages, AreAllDistinct) {
  std::set<std::string> fragments;
  for (const auto& c : malformed_cases()) fragments.insert(c.expected);
  EXPECT_GE(fragments.size(), 20u);
}

TEST(MalformedSafetensors, BoolTensorWithInvalidByteIsRejectedOnLoad) {
  test::TempDir dir;
  const std::string header = R"({"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
  test::write_bytes(dir / "m.safetensors", with_length(header.size(), header) + std::string("\x01\x02\x00", 3));
  const auto file = SafetensorsFile::open(dir / "m.safetensors");
  test::expect_bad_input([&] { file.load("mask"); }, "holds byte value 2 (expected 0 or 1)");
}

TEST(MalformedSafetensors, UnknownTensorNameIsBadInput) {
  test::TempDir dir;
  save_safetensors(dir / "model.safetensors", {{"w", at::zeros({2})}});
  test::expect_bad_input([&] { Checkpoint::open(dir.path()).load("v"); },
                         "checkpoint has no tensor 'v'");
}

// Mutated copies of a valid file (bytes flipped in the header and length prefix, or truncated):
// each must open and load, or fail with a sarqc::Error. Anything else, or a crash, fails.
TEST(MalformedSafetensors, RandomMutationsNeverCrash) {
  test::TempDir dir;
  const fs::path valid = dir / "valid.safetensors";
  save_safetensors(valid, {{"a", at::arange(6, at::kFloat).reshape({2, 3})},
                           {"b", at::ones({4}, at::kHalf)},
                           {"c", at::zeros({3}, at::kBool)},
                           {"d", at::arange(5, at::kLong)}});
  const std::string original = test::read_bytes(valid);
  uint64_t header_len = 0;
  std::memcpy(&header_len, original.data(), 8);
  std::mt19937_64 rng(12345);
  const char interesting[] = {'{', '}', '[', ']', '"', ',', ':', '0', '9', '-', ' ', '\0', '\xff'};
  int rejected = 0, accepted = 0;
  for (int round = 0; round < 400; ++round) {
    std::string bytes = original;
    if (round % 10 == 9) {
      bytes.resize(rng() % bytes.size());
    } else {
      for (int k = 0, n = 1 + int(rng() % 3); k < n; ++k) {
        const size_t pos = rng() % (8 + header_len);
        bytes[pos] = rng() % 2 ? interesting[rng() % sizeof(interesting)] : char(rng());
      }
    }
    const fs::path path = dir / "mutated.safetensors";
    test::write_bytes(path, bytes);
    try {
      const auto file = SafetensorsFile::open(path);
      for (const auto& t : file.tensors()) file.load(t.name);
      ++accepted;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "round " << round << ": unexpected exception " << e.what();
    }
  }
  EXPECT_GT(rejected, 300);  // nearly every mutation of the header breaks it
  EXPECT_GT(accepted + rejected, 399);
}

// --- sharded checkpoints -------------------------------------------------------------------

class MalformedShardedCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    // b.w and b.x belong to one module, so they share the second shard.
    ShardedWriter writer(dir_.path(),
                         {{"a.w", Dtype::F32, {16}}, {"b.w", Dtype::F32, {16}},
                          {"b.x", Dtype::F32, {16}}},
                         {}, 64);
    for (const char* name : {"a.w", "b.w", "b.x"}) writer.write(name, at::ones({16}));
    writer.commit();
    ASSERT_EQ(writer.shard_count(), 2u);
    ASSERT_NO_THROW(Checkpoint::open(dir_.path()));
  }
  void write_index(const std::string& text) {
    test::write_bytes(dir_ / kSafetensorsIndexName, text);
  }
  nlohmann::json index() {
    return nlohmann::json::parse(test::read_bytes(dir_ / kSafetensorsIndexName));
  }
  test::TempDir dir_;
};

TEST_F(MalformedShardedCheckpoint, IndexNotJson) {
  write_index("{\"weight_map\": ");
  test::expect_bad_input([&] { Checkpoint::open(dir_.path()); }, "index.json: not valid JSON");
}

TEST_F(MalformedShardedCheckpoint, IndexWithoutWeightMap) {
  write_index(R"({"metadata": {}})");
  test::expect_bad_input([&] { Checkpoint::open(dir_.path()); }, "missing object 'weight_map'");
}

TEST_F(MalformedShardedCheckpoint, MissingShard) {
  fs::remove(dir_ / "model-00002-of-00002.safetensors");
  test::expect_bad_input([&] { Checkpoint::open(dir_.path()); },
                         "shard 'model-00002-of-00002.safetensors' listed in the index is "
                         "missing");
}

TEST_F(MalformedShardedCheckpoint, TensorNamedInIndexButAbsent) {
  auto j = index();
  j["weight_map"]["c.w"] = "model-00001-of-00002.safetensors";
  write_index(j.dump());
  test::expect_bad_input([&] { Checkpoint::open(dir_.path()); },
                         "tensor 'c.w' is named in the index but absent from shard "
                         "'model-00001-of-00002.safetensors'");
}

TEST_F(MalformedShardedCheckpoint, TensorInShardButNotInIndex) {
  auto j = index();
  j["weight_map"].erase("b.x");
  write_index(j.dump());
  test::expect_bad_input([&] { Checkpoint::open(dir_.path()); },
                         "tensor 'b.x' in shard 'model-00002-of-00002.safetensors' is not "
                         "mapped to that shard");
}

TEST_F(MalformedShardedCheckpoint, ShardPathEscapingTheFolder) {
  auto j = index();
  j["weight_map"]["a.w"] = "../model-00001-of-00002.safetensors";
  write_index(j.dump());
  test::expect_bad_input([&] { Checkpoint::open(dir_.path()); }, "must be a plain file name");
}

TEST_F(MalformedShardedCheckpoint, CorruptShardIsNamed) {
  test::write_bytes(dir_ / "model-00002-of-00002.safetensors", with_length(5000, "{}"));
  test::expect_bad_input([&] { Checkpoint::open(dir_.path()); },
                         "model-00002-of-00002.safetensors: header length 5000 runs past");
}

TEST(MalformedCheckpointFolder, PickleOnlyNotAFolderAndEmpty) {
  test::TempDir dir;
  test::expect_bad_input([&] { Checkpoint::open(dir.path()); }, "no model.safetensors");
  test::write_bytes(dir / "pytorch_model.bin", "PK");
  test::expect_bad_input([&] { Checkpoint::open(dir.path()); }, "only pickle weights");
  test::expect_bad_input([&] { Checkpoint::open(dir / "pytorch_model.bin"); }, "not a directory");
}

}  // namespace
}  // namespace sarqc

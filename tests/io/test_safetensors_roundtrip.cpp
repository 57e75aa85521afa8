#include <gtest/gtest.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/checkpoint.h"
#include "sarqc/io/safetensors_reader.h"
#include "sarqc/io/safetensors_writer.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Random tensor of any dtype this libtorch can represent.
at::Tensor random_tensor(Dtype dtype, at::IntArrayRef shape, int64_t seed) {
  at::manual_seed(seed);
  const at::ScalarType type = *to_scalar_type(dtype);
  if (type == at::kBool) return at::randint(0, 2, shape).to(at::kBool);
  if (at::isFloatingType(type)) return (at::randn(shape) * 3).to(type);
  const int64_t lo = type == at::kByte ? 0 : -100, hi = 100;
  return at::randint(lo, hi, shape).to(type);
}

std::vector<Dtype> representable_dtypes() {
  std::vector<Dtype> out;
  for (int i = 0; i <= static_cast<int>(Dtype::F64); ++i)
    if (to_scalar_type(static_cast<Dtype>(i))) out.push_back(static_cast<Dtype>(i));
  return out;
}

bool bytes_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

// Reads a safetensors header with nothing but the spec, independently of SafetensorsFile.
json raw_header(const fs::path& path, uint64_t* header_len) {
  const std::string bytes = test::read_bytes(path);
  std::memcpy(header_len, bytes.data(), 8);
  return json::parse(bytes.substr(8, *header_len));
}

TEST(SafetensorsRoundTrip, EveryDtypeShardedWithIndex) {
  test::TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  int64_t seed = 0;
  for (Dtype dtype : representable_dtypes()) {
    const std::string base = "layer." + std::string(dtype_name(dtype));
    tensors.emplace_back(base + ".matrix", random_tensor(dtype, {7, 5}, seed++));
    tensors.emplace_back(base + ".vector", random_tensor(dtype, {13}, seed++));
    tensors.emplace_back(base + ".scalar", random_tensor(dtype, {}, seed++));
    tensors.emplace_back(base + ".empty", random_tensor(dtype, {0, 4}, seed++));
  }
  std::vector<TensorSpec> specs;
  uint64_t total = 0;
  for (const auto& [name, t] : tensors) {
    specs.push_back(TensorSpec::of(name, t));
    total += t.nbytes();
  }
  ShardedWriter writer(dir.path(), specs, {{"producer", "sarqc-test"}}, /*max_shard_bytes=*/256);
  // Any write order works: the layout was fixed up front.
  for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) writer.write(it->first, it->second);
  writer.commit();
  ASSERT_GT(writer.shard_count(), 3u);

  // The index names every tensor exactly once, in a shard that exists, with the right total.
  const json index = json::parse(test::read_bytes(dir / kSafetensorsIndexName));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  std::set<std::string> shard_files;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    shard_files.insert(shard.get<std::string>());
    EXPECT_TRUE(fs::exists(dir / shard.get<std::string>())) << shard;
  }
  std::set<std::string> expected_files;
  for (size_t i = 1; i <= writer.shard_count(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i, writer.shard_count());
    expected_files.insert(name);
  }
  EXPECT_EQ(shard_files, expected_files);

  // Each shard: 8-aligned data start, format metadata, offsets aligned to their itemsize.
  for (const auto& shard : shard_files) {
    uint64_t header_len = 0;
    const json header = raw_header(dir / shard, &header_len);
    EXPECT_EQ((8 + header_len) % 8, 0u) << shard;
    EXPECT_EQ(header["__metadata__"]["format"], "pt");
    EXPECT_EQ(header["__metadata__"]["producer"], "sarqc-test");
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;
      const uint64_t begin = entry["data_offsets"][0].get<uint64_t>();
      EXPECT_EQ(begin % dtype_itemsize(*dtype_from_name(entry["dtype"].get<std::string>())), 0u)
          << name;
    }
  }

  const Checkpoint ckpt = Checkpoint::open(dir.path());
  EXPECT_TRUE(ckpt.sharded());
  EXPECT_EQ(ckpt.tensor_count(), tensors.size());
  EXPECT_EQ(ckpt.total_bytes(), total);
  for (const auto& [name, expected] : tensors) {
    const at::Tensor got = ckpt.load(name);
    EXPECT_TRUE(bytes_equal(got, expected)) << name;
  }
}

TEST(SafetensorsRoundTrip, SingleShardIsModelSafetensorsWithoutIndex) {
  test::TempDir dir;
  const at::Tensor w = random_tensor(Dtype::BF16, {4, 8}, 1);
  ShardedWriter writer(dir.path(), {TensorSpec::of("w", w)});
  writer.write("w", w);
  writer.commit();
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / kSafetensorsIndexName));
  EXPECT_TRUE(bytes_equal(Checkpoint::open(dir.path()).load("w"), w));
}

TEST(SafetensorsRoundTrip, TensorsOfOneModuleStayInOneShard) {
  test::TempDir dir;
  std::vector<TensorSpec> specs = {{"m.a.qweight", Dtype::I32, {16}},
                                   {"m.a.scales", Dtype::F16, {16}},
                                   {"m.b.qweight", Dtype::I32, {16}},
                                   {"m.b.scales", Dtype::F16, {16}}};
  // 96 bytes per module; 100-byte shards hold one module each, never half of one.
  ShardedWriter writer(dir.path(), specs, {}, 100);
  EXPECT_EQ(writer.shard_count(), 2u);
  for (const auto& s : specs)
    writer.write(s.name, at::zeros(s.shape, at::TensorOptions().dtype(*to_scalar_type(s.dtype))));
  writer.commit();
  const json index = json::parse(test::read_bytes(dir / kSafetensorsIndexName));
  EXPECT_EQ(index["weight_map"]["m.a.qweight"], index["weight_map"]["m.a.scales"]);
  EXPECT_EQ(index["weight_map"]["m.b.qweight"], index["weight_map"]["m.b.scales"]);
  EXPECT_NE(index["weight_map"]["m.a.qweight"], index["weight_map"]["m.b.qweight"]);
}

TEST(SafetensorsRoundTrip, InterruptedShardedWriteLeavesNoCheckpoint) {
  test::TempDir dir;
  const at::Tensor a = at::ones({64}), b = at::ones({64});
  {
    ShardedWriter writer(dir.path(), {TensorSpec::of("a.w", a), TensorSpec::of("b.w", b)}, {},
                         300);
    writer.write("a.w", a);
    EXPECT_THROW(writer.commit(), c10::Error);  // b.w never written
  }
  EXPECT_TRUE(fs::is_empty(dir.path())) << "temporary or partial files were left behind";
  test::expect_bad_input([&] { Checkpoint::open(dir.path()); }, "no model.safetensors");
}

TEST(SafetensorsRoundTrip, WriterRejectsTensorsThatDoNotMatchThePlan) {
  test::TempDir dir;
  SafetensorsWriter writer(dir / "x.safetensors", {{"w", Dtype::F32, {2, 3}}});
  EXPECT_THROW(writer.write("w", at::zeros({3, 2})), c10::Error);
  EXPECT_THROW(writer.write("w", at::zeros({2, 3}, at::kDouble)), c10::Error);
  EXPECT_THROW(writer.write("other", at::zeros({2, 3})), c10::Error);
  writer.write("w", at::zeros({4, 6}).slice(0, 0, 4, 2).slice(1, 0, 6, 2));  // strided is fine
  EXPECT_THROW(writer.write("w", at::zeros({2, 3})), c10::Error);             // twice
}

TEST(SafetensorsReader, CpuTensorsAreZeroCopyViewsAndWritesStayPrivate) {
  test::TempDir dir;
  const at::Tensor w = at::arange(64, at::kFloat).reshape({8, 8});
  save_safetensors(dir / "model.safetensors", {{"w", w}});
  const auto file = SafetensorsFile::open(dir / "model.safetensors");
  at::Tensor first = file.load("w");
  const at::Tensor second = file.load("w");
  EXPECT_EQ(first.data_ptr(), second.data_ptr()) << "loading twice copied the data";
  first.mul_(2);  // copy-on-write mapping: memory changes, the file does not
  EXPECT_TRUE(at::equal(SafetensorsFile::open(dir / "model.safetensors").load("w"), w));
}

TEST(SafetensorsReader, MisalignedDataIsCopiedCorrectly) {
  test::TempDir dir;
  // Header of odd length and no padding: the F32 data starts at an odd file offset.
  const std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  ASSERT_EQ((8 + header.size()) % 4 != 0, true);
  const float values[3] = {1.5f, -2.25f, 3.0f};
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header;
  bytes.append(reinterpret_cast<const char*>(values), sizeof(values));
  test::write_bytes(dir / "m.safetensors", bytes);
  const at::Tensor w = SafetensorsFile::open(dir / "m.safetensors").load("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.data_ptr()) % alignof(float), 0u);
  EXPECT_TRUE(at::equal(w, at::tensor({1.5f, -2.25f, 3.0f})));
}

// The bytes of tensors that were not loaded must not be read from disk: check with mincore()
// after dropping the file from the page cache.
TEST(SafetensorsReader, LoadingOneTensorDoesNotReadTheOthers) {
  test::TempDir dir;
  const int64_t n = 1 << 20;  // 4 MiB per tensor, far beyond kernel read-ahead
  const fs::path path = dir / "model.safetensors";
  save_safetensors(path, {{"a", at::full({n}, 1.0f)}, {"b", at::full({n}, 2.0f)},
                          {"c", at::full({n}, 3.0f)}});
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  const off_t size = ::lseek(fd, 0, SEEK_END);
  const long page = ::sysconf(_SC_PAGESIZE);
  void* probe = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(probe, MAP_FAILED);
  std::vector<unsigned char> resident((size + page - 1) / page);
  auto resident_fraction = [&](uint64_t begin, uint64_t end) {
    ::mincore(probe, size, resident.data());
    size_t hit = 0, total = 0;
    for (uint64_t p = begin / page; p < end / page; ++p, ++total) hit += resident[p] & 1;
    return double(hit) / double(total);
  };
  const auto file = SafetensorsFile::open(path);
  const uint64_t data_start = 8 + file.header_bytes();
  auto range = [&](const char* name) {
    const TensorInfo& t = file.info(name);
    return std::make_pair(data_start + t.begin, data_start + t.end);
  };
  if (resident_fraction(range("a").first, range("c").second) > 0.5)
    GTEST_SKIP() << "this filesystem keeps the file cached (cannot observe lazy reads)";

  EXPECT_FLOAT_EQ(file.load("b").sum().item<float>(), 2.0f * n);
  const auto [b0, b1] = range("b");
  EXPECT_GT(resident_fraction(b0, b1), 0.99);
  EXPECT_LT(resident_fraction(range("a").first, range("a").second), 0.1);
  EXPECT_LT(resident_fraction(range("c").first, range("c").second), 0.1);
  ::munmap(probe, size);
  ::close(fd);
}

}  // namespace
}  // namespace sarqc

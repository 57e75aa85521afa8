#include <gtest/gtest.h>
#include <sched.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "sarqc/io/checkpoint.h"
#include "sarqc/io/safetensors_writer.h"
#include "sarqc/util/device.h"
#include "test_support.h"

namespace sarqc {
namespace {

using test::expect_error;

TEST(Device, ParsesCpu) { EXPECT_TRUE(parse_device("cpu").is_cpu()); }

TEST(Device, RejectsUnknownNames) {
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "cuda:1:2", ""})
    expect_error([&] { parse_device(bad); }, ErrorKind::Usage, "--device");
}

TEST(Device, CudaWithoutGpuIsAUsageError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA GPU is present";
  expect_error([] { parse_device("cuda"); }, ErrorKind::Usage, "CUDA is not available");
  expect_error([] { parse_device("cuda:0"); }, ErrorKind::Usage, "CUDA is not available");
}

TEST(Device, CudaDeviceIndexBeyondCountIsAUsageError) {
  if (!cuda_available()) GTEST_SKIP() << "CUDA not available";
  expect_error([] { parse_device("cuda:999"); }, ErrorKind::Usage, "CUDA device(s) visible");
}

TEST(Device, ConfigureThreadsUsesTheCoresTheProcessMayRunOn) {
  cpu_set_t original;
  ASSERT_EQ(::sched_getaffinity(0, sizeof(original), &original), 0);
  EXPECT_EQ(configure_threads(0), CPU_COUNT(&original));
  EXPECT_EQ(at::get_num_threads(), CPU_COUNT(&original));
  // Restricted to one CPU (as `taskset -c N` does): one thread, however many the machine has.
  int first = 0;
  while (!CPU_ISSET(first, &original)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(::sched_setaffinity(0, sizeof(one), &one), 0);
  const int restricted = configure_threads(0);
  ASSERT_EQ(::sched_setaffinity(0, sizeof(original), &original), 0);
  EXPECT_EQ(restricted, 1);
  EXPECT_EQ(configure_threads(3), 3);  // an explicit count is taken as given
  EXPECT_EQ(at::get_num_threads(), 3);
  configure_threads(0);
}

TEST(Device, CheckpointLoadsOntoCuda) {
  if (!cuda_available()) GTEST_SKIP() << "CUDA not available";
  test::TempDir dir;
  const at::Tensor w = at::randn({33, 17}).to(at::kHalf);
  save_safetensors(dir / "model.safetensors", {{"w", w}});
  const Checkpoint ckpt = Checkpoint::open(dir.path());
  const at::Tensor on_gpu = ckpt.load("w", parse_device("cuda:0"));
  EXPECT_TRUE(on_gpu.is_cuda());
  EXPECT_TRUE(at::equal(on_gpu.cpu(), w));
}

}  // namespace
}  // namespace sarqc

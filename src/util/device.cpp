#include "sarqc/util/device.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <fmt/format.h>

#include "sarqc/util/error.h"

namespace sarqc {

bool cuda_available() { return at::globalContext().hasCUDA() && cuda_device_count() > 0; }

int cuda_device_count() {
  if (!at::globalContext().hasCUDA()) return 0;
  return static_cast<int>(torch::cuda::device_count());  // the public API
}

c10::Device parse_device(const std::string& text) {
  if (text == "cpu") return c10::Device(c10::kCPU);
  int index = -1;
  int local_rank = -1;
  if (text == "cuda") {
    // The ranks of a distributed run on one machine (torchrun, srun, --nproc set LOCAL_RANK and
    // WORLD_SIZE) take one GPU each, cuda:LOCAL_RANK, as PyTorch scripts do; cuda:N puts every
    // rank on device N.
    const char* world = std::getenv("WORLD_SIZE");
    const char* local = std::getenv("LOCAL_RANK");
    if (world != nullptr && std::atoi(world) > 1 && local != nullptr && *local != '\0')
      local_rank = std::max(0, std::atoi(local));
    index = std::max(local_rank, 0);
  } else if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 8 &&
             text.find_first_not_of("0123456789", 5) == std::string::npos) {
    index = std::stoi(text.substr(5));
  } else {
    throw_usage(fmt::format("--device '{}': expected cpu, cuda or cuda:N", text));
  }
  if (!cuda_available())
    throw_usage(fmt::format("--device {}: CUDA is not available (this libtorch has no CUDA "
                            "support or no GPU is visible); use --device cpu",
                            text));
  const int count = cuda_device_count();
  if (local_rank >= count)
    throw_usage(fmt::format("--device cuda: the rank with LOCAL_RANK={} takes cuda:{}, but only {} "
                            "CUDA device(s) are visible; start at most {} ranks per machine or "
                            "name one device (cuda:N) for all",
                            local_rank, local_rank, count, count));
  if (index >= count)
    throw_usage(fmt::format("--device {}: only {} CUDA device(s) visible (cuda:0..cuda:{})", text,
                            count, count - 1));
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

int usable_cores() {
  // The CPUs this process may run on (taskset, cgroup cpusets), not all the machine has.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
    return CPU_COUNT(&set);
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int checked_thread_count(int n) {
  const int cores = usable_cores();
  if (n > 4 * cores)
    throw_usage(fmt::format("--threads {}: expected 0 (one per usable core) to {} (4 per usable "
                            "core; this process may use {})",
                            n, 4 * cores, cores));
  return n <= 0 ? cores : n;
}

int configure_threads(int n) {
  n = checked_thread_count(n);
  at::set_num_threads(n);
  return n;
}

}  // namespace sarqc

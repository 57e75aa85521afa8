#include "sarqc/dist/world.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <functional>
#include <vector>

#include "sarqc/util/error.h"

namespace sarqc {
namespace {

// The value of `name`, or `fallback` when unset; an integer in [lo, hi] or a usage error.
int int_variable(const char* name, int fallback, int lo, int hi) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < lo || value > hi)
    throw_usage(fmt::format("environment variable {}='{}': expected an integer in [{}, {}]", name,
                            text, lo, hi));
  return static_cast<int>(value);
}

// The interface Gloo listens on: GLOO_SOCKET_IFNAME as in PyTorch; loopback when the master is
// on this machine's loopback (one node); else the address this host's name resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const WorldConfig& c) {
  if (const char* name = std::getenv("GLOO_SOCKET_IFNAME"); name != nullptr && *name != '\0')
    return c10d::ProcessGroupGloo::createDeviceForInterface(name);
  if (c.master_addr == "localhost" || c.master_addr.rfind("127.", 0) == 0)
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

WorldConfig world_from_environment() {
  WorldConfig c;
  c.size = int_variable("WORLD_SIZE", 1, 1, 65536);
  if (c.size == 1) return c;
  if (std::getenv("RANK") == nullptr)
    throw_usage("environment variable WORLD_SIZE is set but RANK is not (torchrun and srun set both)");
  c.rank = int_variable("RANK", 0, 0, c.size - 1);
  c.local_rank = int_variable("LOCAL_RANK", c.rank, 0, 65535);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0')
    c.master_addr = addr;
  c.master_port = int_variable("MASTER_PORT", c.master_port, 1, 65535);
  c.timeout = std::chrono::seconds(int_variable("SARQC_DIST_TIMEOUT", 600, 1, 86400 * 7));
  return c;
}

struct World::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

World::World(const WorldConfig& config) : config_(config) {
  if (config_.size == 1) return;
  impl_ = std::make_unique<Impl>();
  const std::string where = fmt::format("{}:{}", config_.master_addr, config_.master_port);
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(config_.master_port);
    options.isServer = config_.rank == 0;
    options.numWorkers = static_cast<std::size_t>(config_.size);
    options.timeout = config_.timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(config_.master_addr, options);
    auto gloo = c10d::ProcessGroupGloo::Options::create(config_.timeout);
    gloo->devices.push_back(gloo_device(config_));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, config_.rank,
                                                               config_.size, gloo);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw_runtime(fmt::format("rank {} of {}: rendezvous at {} failed within {} s: {}",
                              config_.rank, config_.size, where,
                              std::chrono::duration_cast<std::chrono::seconds>(config_.timeout)
                                  .count(),
                              what.substr(0, what.find('\n'))));
  }
}

World::~World() = default;

namespace {

// Runs one collective; a failure (a rank died: its connections closed; or hangs: the timeout)
// becomes one runtime Error line naming this rank and the operation.
void collective(const WorldConfig& c, const char* op, const std::function<void()>& run) {
  try {
    run();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw_runtime(fmt::format("rank {} of {}: {} failed: another rank died or did not answer "
                              "within {} s ({})",
                              c.rank, c.size, op,
                              std::chrono::duration_cast<std::chrono::seconds>(c.timeout).count(),
                              what.substr(0, what.find('\n'))));
  }
}

}  // namespace

void World::all_reduce_sum(at::Tensor& tensor) {
  if (config_.size == 1) return;
  collective(config_, "all-reduce", [&] {
    std::vector<at::Tensor> host = {tensor.to(at::kCPU).contiguous()};
    impl_->group->allreduce(host)->wait();
    tensor.copy_(host[0]);
  });
}

void World::broadcast(at::Tensor& tensor, int root) {
  if (config_.size == 1) return;
  collective(config_, "broadcast", [&] {
    std::vector<at::Tensor> host = {tensor.to(at::kCPU).contiguous()};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    impl_->group->broadcast(host, options)->wait();
    tensor.copy_(host[0]);
  });
}

void World::barrier() {
  if (config_.size == 1) return;
  collective(config_, "barrier", [&] { impl_->group->barrier()->wait(); });
}

}  // namespace sarqc

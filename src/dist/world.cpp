#include "sarqc/dist/world.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <functional>
#include <stdexcept>
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
  const int timeout_s = static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(c.timeout).count());
  c.rendezvous_timeout = std::chrono::seconds(
      int_variable("SARQC_DIST_RENDEZVOUS_TIMEOUT", std::max(600, timeout_s), 1, 86400 * 7));
  return c;
}

// Besides the process group, each rank keeps two counters in the store so that a failed
// collective can say which rank is to blame: "beat/R", raised every second by a thread of rank R
// (through its own store connection), and "at/R", the number of collectives rank R entered.
struct World::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  int64_t collectives = 0;
  std::atomic<bool> stop{false};
  std::thread heartbeat;

  ~Impl() {
    stop = true;
    if (heartbeat.joinable()) heartbeat.join();
  }
};

namespace {

std::string key(const char* what, int rank) { return fmt::format("sarqc/{}/{}", what, rank); }

void beat(c10::intrusive_ptr<c10d::TCPStore> client, int rank, const std::atomic<bool>& stop) {
  try {
    while (!stop) {
      client->add(key("beat", rank), 1);
      for (int i = 0; i < 10 && !stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } catch (const std::exception&) {  // the store is gone (rank 0 ended): nothing left to tell
  }
}

// Which ranks a failed collective waited for: those whose heartbeat stopped (dead or stopped),
// else those that have not entered as many collectives (alive, but busy or stuck elsewhere).
std::string diagnose(const WorldConfig& c, World::Impl& impl) {
  try {
    std::vector<int64_t> before(c.size), after(c.size), at(c.size, 0);
    for (int r = 0; r < c.size; ++r) before[r] = impl.store->add(key("beat", r), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    std::vector<int> dead, behind;
    for (int r = 0; r < c.size; ++r) {
      after[r] = impl.store->add(key("beat", r), 0);
      if (impl.store->check({key("at", r)})) {
        const std::vector<uint8_t> v = impl.store->get(key("at", r));
        at[r] = std::stoll(std::string(v.begin(), v.end()));
      }
      if (r == c.rank) continue;
      if (after[r] == before[r]) dead.push_back(r);
    }
    if (!dead.empty())
      return fmt::format("rank {} stopped answering (killed, crashed or stopped)",
                         fmt::join(dead, ", "));
    // The ranks furthest behind hold up the others (which may be waiting for them too).
    const int64_t lowest = *std::min_element(at.begin(), at.end());
    for (int r = 0; r < c.size; ++r)
      if (r != c.rank && at[r] == lowest && lowest < impl.collectives) behind.push_back(r);
    if (!behind.empty())
      return fmt::format("rank {} is alive but still at collective {} of this rank's {} (busy "
                         "or stuck)",
                         fmt::join(behind, ", "), lowest, impl.collectives);
    return "every rank is alive: the network between them failed";
  } catch (const std::exception&) {
    return "rank 0, which serves the rendezvous store, is gone";
  }
}

// Each rank sets "arrived/R" and polls for every other's until the rendezvous timeout (polling
// rather than Store::wait, which libtorch 1.13 cannot cancel after a timeout); on timeout the
// message names the missing ranks.
void await_all_ranks(const WorldConfig& c, c10d::TCPStore& store) {
  store.set(key("arrived", c.rank), std::vector<uint8_t>{1});
  std::vector<std::string> keys;
  for (int r = 0; r < c.size; ++r) keys.push_back(key("arrived", r));
  const auto deadline = std::chrono::steady_clock::now() + c.rendezvous_timeout;
  while (!store.check(keys)) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::vector<int> missing;
      for (int r = 0; r < c.size; ++r)
        if (!store.check({key("arrived", r)})) missing.push_back(r);
      throw std::runtime_error(fmt::format(
          "rank {} of {} did not arrive (not started, crashed at start-up, or cannot reach the "
          "address)",
          fmt::join(missing, ", "), c.size));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

World::World(const WorldConfig& config) : config_(config) {
  if (config_.size == 1) return;
  impl_ = std::make_unique<Impl>();
  const std::string where = fmt::format("{}:{}", config_.master_addr, config_.master_port);
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(config_.master_port);
    options.isServer = config_.rank == 0;
    options.numWorkers = static_cast<std::size_t>(config_.size);
    // The store's timeout bounds the wait for the other ranks to connect (and Gloo's own
    // rendezvous through it); the collectives get config_.timeout from Gloo's options.
    options.timeout = config_.rendezvous_timeout;
    // The ranks announce themselves in the store, rather than rank 0's constructor counting
    // connections, so that a rendezvous that times out can name the ranks that never came.
    options.waitWorkers = false;
    c10::intrusive_ptr<c10d::TCPStore> heartbeat_store;
    try {
      impl_->store = c10::make_intrusive<c10d::TCPStore>(config_.master_addr, options);
      // Both connections before this rank counts as arrived: once all have, rank 0 may stop
      // (a refusal) without leaving anyone retrying a connection for the whole timeout.
      c10d::TCPStoreOptions client = options;
      client.isServer = false;
      heartbeat_store = c10::make_intrusive<c10d::TCPStore>(config_.master_addr, client);
    } catch (const std::exception& e) {
      if (config_.rank == 0) throw;
      const std::string what = e.what();
      throw std::runtime_error("rank 0, which serves the store there, did not answer (not "
                               "started, stopped early, or not reachable at that address): " +
                               what.substr(0, what.find('\n')));
    }
    await_all_ranks(config_, *impl_->store);
    auto gloo = c10d::ProcessGroupGloo::Options::create(config_.timeout);
    gloo->devices.push_back(gloo_device(config_));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, config_.rank,
                                                               config_.size, gloo);
    impl_->heartbeat = std::thread(beat, heartbeat_store, config_.rank, std::cref(impl_->stop));
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw_runtime(fmt::format("rank {} of {}: rendezvous at {} failed within {} s: {}",
                              config_.rank, config_.size, where,
                              std::chrono::duration_cast<std::chrono::seconds>(
                                  config_.rendezvous_timeout)
                                  .count(),
                              what.substr(0, what.find('\n'))));
  }
}

World::~World() = default;

namespace {

// Rank 0 serves the store the others diagnose through: after a failure it stays until every
// rank has diagnosed its own (they count in the store) or the timeout has passed once more, so
// that no rank finds the store gone and blames rank 0.
void outlive_diagnoses(const WorldConfig& c, World::Impl& impl) {
  try {
    impl.store->add(key("diagnosed", 0), 1);
    if (c.rank != 0) return;
    const auto deadline = std::chrono::steady_clock::now() + c.timeout + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < deadline) {
      int alive = 0;
      const int64_t diagnosed = impl.store->add(key("diagnosed", 0), 0);
      if (diagnosed >= c.size) return;
      // Ranks whose heartbeat stopped will never diagnose.
      std::vector<int64_t> beats(c.size);
      for (int r = 0; r < c.size; ++r) beats[r] = impl.store->add(key("beat", r), 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      for (int r = 0; r < c.size; ++r)
        alive += impl.store->add(key("beat", r), 0) != beats[r] ? 1 : 0;
      if (impl.store->add(key("diagnosed", 0), 0) >= alive) return;
    }
  } catch (const std::exception&) {  // the store failed: nothing to wait for
  }
}

}  // namespace

// Runs one collective; a failure (a rank died: its connections closed; or hangs: the timeout)
// becomes one runtime Error line naming this rank, the operation and the rank it waited for.
void World::collective(const char* op, const std::function<void()>& run) {
  const WorldConfig& c = config_;
  try {
    const std::string count = std::to_string(++impl_->collectives);
    impl_->store->set(key("at", c.rank), std::vector<uint8_t>(count.begin(), count.end()));
    run();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const std::string diagnosis = diagnose(c, *impl_);
    outlive_diagnoses(c, *impl_);
    throw_runtime(fmt::format("rank {} of {}: {} failed: another rank died or did not answer "
                              "within {} s: {} ({})",
                              c.rank, c.size, op,
                              std::chrono::duration_cast<std::chrono::seconds>(c.timeout).count(),
                              diagnosis, what.substr(0, what.find('\n'))));
  }
}

void World::all_reduce_sum(at::Tensor& tensor) {
  if (config_.size == 1) return;
  collective("all-reduce", [&] {
    std::vector<at::Tensor> host = {tensor.to(at::kCPU).contiguous()};
    impl_->group->allreduce(host)->wait();
    tensor.copy_(host[0]);
  });
}

void World::broadcast_text(std::string& text, int root) {
  if (config_.size == 1) return;
  at::Tensor length = at::tensor(std::vector<int64_t>{static_cast<int64_t>(text.size())}, at::kLong);
  broadcast(length, root);
  const int64_t n = length.item<int64_t>();
  if (n == 0) {
    text.clear();
    return;
  }
  at::Tensor bytes = at::empty({n}, at::kByte);
  if (config_.rank == root) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  broadcast(bytes, root);
  text.assign(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(n));
}

void World::broadcast(at::Tensor& tensor, int root) {
  if (config_.size == 1) return;
  collective("broadcast", [&] {
    std::vector<at::Tensor> host = {tensor.to(at::kCPU).contiguous()};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    impl_->group->broadcast(host, options)->wait();
    tensor.copy_(host[0]);
  });
}

void World::barrier() {
  if (config_.size == 1) return;
  collective("barrier", [&] { impl_->group->barrier()->wait(); });
}

}  // namespace sarqc

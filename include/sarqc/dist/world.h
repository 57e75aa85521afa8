#pragma once
// The ranks of a distributed run on torch.distributed's c10d: they meet through a c10d TCPStore
// on MASTER_ADDR:MASTER_PORT (rank 0 serves it) and exchange tensors through ProcessGroupGloo.
// A world of one rank creates neither and communicates nothing. The c10d and Gloo headers stay in
// world.cpp (they are heavy, and Gloo's come from Debian's libgloo-dev).
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

namespace sarqc {

struct WorldConfig {
  int rank = 0;
  int size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // A collective that waits longer than this for another rank fails: a rank died or hangs.
  // SARQC_DIST_TIMEOUT (seconds) overrides it.
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  // How long the ranks wait for each other to start: separate from `timeout` because ranks of one
  // job start seconds to minutes apart (a batch scheduler, a loaded machine), so a short collective
  // timeout must not fail the start. SARQC_DIST_RENDEZVOUS_TIMEOUT (seconds) overrides it; by
  // default the longer of 10 minutes and `timeout`.
  std::chrono::milliseconds rendezvous_timeout{std::chrono::minutes(10)};
};

// From the variables torchrun sets and SLURM jobs export: RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT (and SARQC_DIST_TIMEOUT, SARQC_DIST_RENDEZVOUS_TIMEOUT); one rank when WORLD_SIZE is unset. A
// malformed or inconsistent value is a usage error naming the variable.
WorldConfig world_from_environment();

class World {
 public:
  // Rendezvous (all ranks must construct their World); a runtime Error naming the address when
  // the others do not come within the rendezvous timeout.
  explicit World(const WorldConfig& config);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return config_.rank; }
  int size() const { return config_.size; }
  bool is_root() const { return config_.rank == 0; }

  // Element-wise sum over the ranks, in place (any device; dense). Every rank ends with the same
  // bits, and a rerun with the same world size with the same bits again: Gloo's ring visits the
  // ranks in a fixed order.
  void all_reduce_sum(at::Tensor& tensor);
  // `tensor` (same shape and dtype on every rank) takes root's values.
  void broadcast(at::Tensor& tensor, int root);
  // `text` takes root's value on every rank.
  void broadcast_text(std::string& text, int root);
  void barrier();

  struct Impl;

 private:
  void collective(const char* op, const std::function<void()>& run);
  WorldConfig config_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sarqc

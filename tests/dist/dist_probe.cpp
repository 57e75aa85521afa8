// A rank of a test world (tests/dist/test_world.cpp starts several): checks that an all-reduce and
// a broadcast give the expected values on every rank and prints one line with them and a
// checksum of a reduced random tensor's bits (equal across ranks and reruns).
// Usage: sarqc_dist_probe [--nproc N] [--die RANK]
//   --nproc N   start N local ranks of this probe (as `sarqc quantize --nproc`)
//   --die R     rank R kills itself (SIGKILL) after the all-reduce: the others must fail in time
//   --hang R    rank R stops taking part after the all-reduce (it sleeps past the timeout, then
//               exits): the others must time out
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <ATen/ATen.h>

#include "sarqc/dist/local_ranks.h"
#include "sarqc/dist/world.h"
#include "sarqc/util/error.h"
#include "sarqc/util/sha256.h"

int main(int argc, char** argv) {
  using namespace sarqc;
  int nproc = 0, die = -1, hang = -1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--nproc") == 0) nproc = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--die") == 0) die = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--hang") == 0) hang = std::stoi(argv[i + 1]);
  }
  try {
    if (nproc > 0 && !launched_as_rank()) return run_local_ranks(nproc, argv);
    const WorldConfig config = world_from_environment();
    World world(config);
    const int r = world.rank(), n = world.size();
    // sum over ranks of (r + 1) * [0, 1, 2, 3, 4] = n (n + 1) / 2 * [0 .. 4], exact in fp32
    at::Tensor t = at::arange(5, at::kFloat) * static_cast<float>(r + 1);
    world.all_reduce_sum(t);
    const at::Tensor expected = at::arange(5, at::kFloat) * static_cast<float>(n * (n + 1) / 2);
    if (r == die) ::kill(::getpid(), SIGKILL);
    if (r == hang) {
      std::this_thread::sleep_for(config.timeout + std::chrono::seconds(10));
      return 0;
    }
    at::Tensor b = at::full({3}, r == n - 1 ? 42.0f : -1.0f);
    world.broadcast(b, n - 1);
    at::manual_seed(1234 + r);
    at::Tensor noise = at::randn({1000});
    world.all_reduce_sum(noise);
    world.barrier();
    const std::string checksum = sha256_hex(noise.data_ptr<float>(), noise.numel() * sizeof(float));
    std::printf("rank %d of %d: sum %s, broadcast %s, checksum %s\n", r, n,
                at::equal(t, expected) ? "ok" : "WRONG", b.eq(42.0f).all().item<bool>() ? "ok" : "WRONG",
                checksum.c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "sarqc_dist_probe: error: %s\n", e.what());
    return exit_code_for(e.kind());
  }
}

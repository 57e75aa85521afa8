// A rank of a test world (tests/dist/test_world.cpp starts several): checks that an all-reduce and
// a broadcast give the expected values on every rank and prints one line with them and a
// checksum of a reduced random tensor's bits (equal across ranks and reruns).
// Usage: sarqc_dist_probe [--nproc N] [--die RANK]
//   --nproc N   start N local ranks of this probe (as `sarqc quantize --nproc`)
//   --die R     rank R kills itself (SIGKILL) after the all-reduce: the others must fail in time
//   --hang R    rank R stops taking part after the all-reduce (it sleeps past the timeout, then
//               exits): the others must time out
//   --gram      also: 10 windows dealt round-robin to the ranks, accumulated (H, D, |x|) and
//               reduced with GramAccumulator::reduce, against one accumulator over all 10 in
//               order on every rank: the sums are exact, so the bits must be equal
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <ATen/ATen.h>

#include <fmt/format.h>

#include "sarqc/calib/gram.h"
#include "sarqc/dist/local_ranks.h"
#include "sarqc/dist/world.h"
#include "sarqc/util/error.h"
#include "sarqc/util/sha256.h"

namespace {

// Window w: 16 tokens x 24 features drawn from a generator seeded with w (the same on every rank),
// its full-precision twin, and α_w.
struct Window {
  at::Tensor x, x_fp, weight;
};
Window window(int w) {
  at::manual_seed(100 + w);
  Window win;
  win.x = at::randn({16, 24});
  win.x_fp = win.x + 0.1 * at::randn({16, 24});
  win.weight = at::full({16}, 0.1f * static_cast<float>(w % 4));
  return win;
}

// The statistics are exact sums of per-window terms: neither the partition nor the order of the
// windows may change a bit. The same windows with a spread of magnitudes (scaled by 10^±6)
// exercise the carries between the high and low integer parts.
std::string check_gram_reduce(sarqc::World& world) {
  using namespace sarqc;
  constexpr int kWindows = 10;
  GramAccumulator mine(24, c10::Device(c10::kCPU)), all(24, c10::Device(c10::kCPU));
  for (int w = 0; w < kWindows; ++w) {
    Window win = window(w);
    const double scale = std::pow(10.0, 6 * ((w % 3) - 1));
    win.x = win.x * scale;
    win.x_fp = win.x_fp * scale;
    all.add(win.x, win.x_fp, win.weight, 1);
    if (w % world.size() == world.rank()) mine.add(win.x, win.x_fp, win.weight, 1);
  }
  mine.reduce([&](at::Tensor& t) { world.all_reduce_sum(t); });
  const bool same = at::equal(mine.matrix(), all.matrix()) &&
                    at::equal(mine.cross(), all.cross()) &&
                    at::equal(mine.abs_mean(), all.abs_mean());
  const bool ok = same && mine.sequences() == kWindows && mine.tokens() == 16 * kWindows;
  return ok ? std::string("ok")
            : fmt::format("WRONG (bits equal: {}, {} sequences, {} tokens)", same,
                          mine.sequences(), mine.tokens());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sarqc;
  int nproc = 0, die = -1, hang = -1;
  bool gram = false;
  for (int i = 1; i < argc; ++i) gram |= std::strcmp(argv[i], "--gram") == 0;
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
    std::string gram_result;
    if (gram) gram_result = ", gram " + check_gram_reduce(world);
    const std::string checksum = sha256_hex(noise.data_ptr<float>(), noise.numel() * sizeof(float));
    std::printf("rank %d of %d: sum %s, broadcast %s, checksum %s%s\n", r, n,
                at::equal(t, expected) ? "ok" : "WRONG", b.eq(42.0f).all().item<bool>() ? "ok" : "WRONG",
                checksum.c_str(), gram_result.c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "sarqc_dist_probe: error: %s\n", e.what());
    return exit_code_for(e.kind());
  }
}

// What exact statistics cost (not a test; scripts/bench_gram.sh): one calibration batch added to
// a Gram accumulator, GramAccumulator::add (the batch's fp32 GEMM, then its exact integer sum,
// calib/exact_sum) against a plain fp32 accumulation of the same batch (addmm into the running
// sum, what sarqc did before), timed alternately in the same run.
// Usage: sarqc_bench_gram N TOKENS [REPEATS]
#include <chrono>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>

#include "sarqc/calib/gram.h"
#include "sarqc/util/cpu_environment.h"
#include "sarqc/util/device.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  sarqc::restart_with_cpu_environment(argv);  // the OpenBLAS core and thread settings
  using namespace sarqc;
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s N TOKENS [REPEATS]\n", argv[0]);
    return 2;
  }
  const int64_t n = std::stoll(argv[1]), tokens = std::stoll(argv[2]);
  const int repeats = argc > 3 ? std::stoi(argv[3]) : 3;
  configure_threads(0);
  at::manual_seed(0);
  const at::Tensor x = at::randn({tokens, n});
  GramAccumulator exact(n, c10::kCPU);
  at::Tensor plain = at::zeros({n, n});
  exact.add(x, 1);  // warm-up (allocations)
  plain.addmm_(x.t(), x);
  double t_exact = 0, t_plain = 0;
  for (int r = 0; r < repeats; ++r) {
    auto start = std::chrono::steady_clock::now();
    plain.addmm_(x.t(), x);
    t_plain += seconds_since(start);
    start = std::chrono::steady_clock::now();
    exact.add(x, 1);
    t_exact += seconds_since(start);
  }
  std::printf("n=%lld tokens=%lld: fp32 addmm %.3f s, exact add %.3f s per batch (x%.2f); "
              "accumulator %lld MiB exact vs %lld MiB fp32\n",
              static_cast<long long>(n), static_cast<long long>(tokens), t_plain / repeats,
              t_exact / repeats, t_exact / t_plain,
              static_cast<long long>(n * n * 16 / 1048576 + n * 16 / 1048576),
              static_cast<long long>(n * n * 4 / 1048576));
  return 0;
}

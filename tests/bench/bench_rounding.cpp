// Time of the rounding backends on one synthetic layer (not a test; scripts/bench_rounding.sh).
// Usage: sarqc_bench_rounding OUT IN [bits] [group] [beam] [backend...]
//        sarqc_bench_rounding --gemm N   (fp32 GEMM rate of this machine, GFLOP/s)
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "sarqc/rounding/rounder.h"
#include "sarqc/util/device.h"
#include "sarqc/util/cpu_environment.h"

int main(int argc, char** argv) {
  sarqc::restart_with_cpu_environment(argv);  // the OpenBLAS core and thread settings
  using namespace sarqc;
  if (argc == 3 && std::string(argv[1]) == "--gemm") {
    configure_threads(0);
    const int64_t n = std::stoll(argv[2]);
    const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
    at::matmul(a, b);  // warm-up
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) at::matmul(a, b);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%.1f\n", 3 * 2.0 * n * n * n / s / 1e9);
    return 0;
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OUT IN [bits] [group] [beam]\n", argv[0]);
    return 2;
  }
  const int64_t m = std::stoll(argv[1]), n = std::stoll(argv[2]);
  const int bits = argc > 3 ? std::stoi(argv[3]) : 4;
  const int64_t group = argc > 4 ? std::stoll(argv[4]) : 128;
  RoundingOptions o;
  o.beam_width = argc > 5 ? std::stoll(argv[5]) : 4;
  configure_threads(0);
  at::manual_seed(0);
  // A synthetic Gram matrix with a decaying spectrum, as calibration activations give.
  const at::Tensor X = at::randn({n, 2 * n}) * at::linspace(1.0, 0.05, 2 * n).unsqueeze(0);
  at::Tensor H = at::matmul(X, X.t()) / n;
  H.diagonal().add_(0.01 * H.diagonal().mean().item<double>());
  const at::Tensor W = at::randn({m, n}) * 0.02;
  const QuantGrid grid{bits, group, true, false};
  std::vector<std::string> names = {"rtn", "gptq", "successive", "beam"};
  if (argc > 6) names.assign(argv + 6, argv + argc);
  for (const std::string& name : names) {
    const auto rounder = make_rounder(name);
    const auto start = std::chrono::steady_clock::now();
    const QuantizedLinear q = rounder->round(W, H, grid, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-10s %lldx%lld %d-bit g%lld%s: %7.2f s  loss %.6g\n", name.c_str(), (long long)m,
                (long long)n, bits, (long long)group,
                name == "beam" ? (" K=" + std::to_string(o.beam_width)).c_str() : "",
                s, q.loss);
  }
  return 0;
}

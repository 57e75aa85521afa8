// Tokenizer throughput (not a test: scripts/bench_tokenizer.sh runs it and BENCHMARKS.md records
// the numbers). Encodes each text file REPEAT times on the calling thread after loading.
// Usage: sarqc_bench_tokenizer MODEL_DIR REPEAT FILE...
#include <chrono>
#include <cstdio>
#include <string>

#include "sarqc/io/tokenizer.h"
#include "sarqc/util/file.h"

int main(int argc, char** argv) {
  using namespace sarqc;
  using Clock = std::chrono::steady_clock;
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL_DIR REPEAT FILE...\n", argv[0]);
    return 2;
  }
  const auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const auto t0 = Clock::now();
  const auto tokenizer = load_tokenizer(argv[1]);
  const auto t1 = Clock::now();
  std::printf("%s: load %.2f s (%s)\n", argv[1], seconds(t0, t1), tokenizer->kind().c_str());
  const int repeat = std::stoi(argv[2]);
  for (int f = 3; f < argc; ++f) {
    const std::string text = read_text_file(argv[f]);
    size_t tokens = 0;
    double best = 1e30;
    for (int r = 0; r < repeat; ++r) {
      const auto a = Clock::now();
      tokens = tokenizer->encode(text).size();
      best = std::min(best, seconds(a, Clock::now()));
    }
    std::printf("  %-24s %8.2f MB %8zu tokens  best of %d: %.3f s  %.2f MB/s\n",
                std::string(argv[f]).substr(std::string(argv[f]).find_last_of('/') + 1).c_str(),
                text.size() / 1e6, tokens, repeat, best, text.size() / 1e6 / best);
  }
  return 0;
}

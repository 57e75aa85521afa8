#include "sarqc/util/memory_monitor.h"

#include <chrono>
#include <cstdio>
#include <cstring>

namespace sarqc {
namespace {

// "RssAnon:\t  1234 kB" -> bytes of every field asked for.
void read_status(std::initializer_list<std::pair<const char*, int64_t*>> fields) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    for (const auto& [name, out] : fields) {
      const size_t len = std::strlen(name);
      long long kb = 0;
      if (std::strncmp(line, name, len) == 0 && line[len] == ':' &&
          std::sscanf(line + len + 1, "%lld", &kb) == 1)
        *out += static_cast<int64_t>(kb) * 1024;
    }
  }
  std::fclose(f);
}

void raise_to(std::atomic<int64_t>& peak, int64_t value) {
  int64_t seen = peak.load();
  while (value > seen && !peak.compare_exchange_weak(seen, value)) {
  }
}

}  // namespace

MemoryUsage current_memory_usage() {
  MemoryUsage u;
  read_status({{"RssAnon", &u.anonymous_bytes},
               {"RssShmem", &u.anonymous_bytes},
               {"RssFile", &u.file_bytes}});
  return u;
}

int64_t peak_resident_bytes() {
  int64_t bytes = 0;
  read_status({{"VmHWM", &bytes}});
  return bytes;
}

PeakMemoryMonitor::PeakMemoryMonitor(int interval_ms) {
  sample();
  thread_ = std::thread([this, interval_ms] {
    while (!stop_.load()) {
      sample();
      std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
    }
  });
}

PeakMemoryMonitor::~PeakMemoryMonitor() {
  stop_ = true;
  thread_.join();
}

void PeakMemoryMonitor::sample() const {
  const MemoryUsage u = current_memory_usage();
  raise_to(anonymous_, u.anonymous_bytes);
  raise_to(file_, u.file_bytes);
}

MemoryUsage PeakMemoryMonitor::peak() const {
  sample();
  return {anonymous_.load(), file_.load()};
}

}  // namespace sarqc

#pragma once
// Resident memory of this process split into anonymous pages (what the run allocates: it counts
// against a cgroup limit and cannot be reclaimed) and file-backed pages (the memory-mapped
// checkpoint: reclaimable, though a cgroup still charges them while they are resident).
#include <atomic>
#include <cstdint>
#include <thread>

namespace sarqc {

struct MemoryUsage {
  int64_t anonymous_bytes = 0;  // RssAnon (+ RssShmem)
  int64_t file_bytes = 0;       // RssFile
};

// From /proc/self/status; zeros where it cannot be read (not Linux).
MemoryUsage current_memory_usage();
// The kernel's high-water mark of the whole resident set (VmHWM), anonymous and mapped together.
int64_t peak_resident_bytes();

// Samples current_memory_usage() every `interval_ms` on a background thread and keeps the peaks
// (the kernel keeps no per-kind high-water mark).
class PeakMemoryMonitor {
 public:
  explicit PeakMemoryMonitor(int interval_ms = 10);
  ~PeakMemoryMonitor();
  PeakMemoryMonitor(const PeakMemoryMonitor&) = delete;
  PeakMemoryMonitor& operator=(const PeakMemoryMonitor&) = delete;

  MemoryUsage peak() const;  // includes a sample taken now

 private:
  void sample() const;
  mutable std::atomic<int64_t> anonymous_{0}, file_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sarqc

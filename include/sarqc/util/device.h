#pragma once
#include <string>

#include <c10/core/Device.h>

namespace sarqc {

// Parses "cpu", "cuda" or "cuda:N". "cuda" is cuda:LOCAL_RANK in a distributed run of several
// ranks (one GPU per rank), else cuda:0. Throws a usage error for anything else, or when CUDA
// (or the device) is not available in this build/machine.
c10::Device parse_device(const std::string& text);

bool cuda_available();
int cuda_device_count();

// The cores this process may run on (its CPU affinity: taskset, cgroup cpusets).
int usable_cores();

// The thread count --threads N asks for: n <= 0 means one per usable core. More than 4 per
// usable core is a usage error naming --threads: OpenMP would start them all (100,000 threads
// hang the machine) for no speed.
int checked_thread_count(int n);

// Sets ATen's intra-op thread count to checked_thread_count(n) (which starts a worker thread);
// returns it.
int configure_threads(int n);

}  // namespace sarqc

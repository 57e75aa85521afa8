#include "sarqc/util/cpu_environment.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <utility>

namespace sarqc {

const char* blas_core_name() {
  using CoreName = char* (*)();
  const auto get = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return get == nullptr ? nullptr : get();  // null: another BLAS (MKL in PyTorch's wheels)
}

const char* openblas_core_override() {
  const char* core = blas_core_name();
  if (core == nullptr) return nullptr;
  bool generic = false;
  for (const char* old : {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                          "Sandybridge", "Unknown", "unknown"})
    generic |= std::strcmp(core, old) == 0;
  if (!generic) return nullptr;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

void restart_with_cpu_environment(char** argv) {
  if (std::getenv("SARQC_NO_REEXEC") != nullptr) return;
  bool changed = false;
  for (const auto& [name, value] : {std::pair{"OMP_WAIT_POLICY", "PASSIVE"},
                                    std::pair{"OPENBLAS_THREAD_TIMEOUT", "4"}})
    if (std::getenv(name) == nullptr) changed |= ::setenv(name, value, 1) == 0;
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr)
    if (const char* core = openblas_core_override())
      changed |= ::setenv("OPENBLAS_CORETYPE", core, 1) == 0;
  if (!changed) return;
  ::setenv("SARQC_NO_REEXEC", "1", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run with the defaults
}

}  // namespace sarqc

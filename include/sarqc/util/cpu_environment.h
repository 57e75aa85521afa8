#pragma once
// Settings that OpenBLAS and libgomp read only when they are loaded (before main), applied by
// restarting the process once with them in its environment.
namespace sarqc {

// The OpenBLAS core to force, or null: Debian 12's OpenBLAS (0.3.21) does not know recent Xeon
// models (e.g. a VM's "Intel Xeon Processor" with AVX-512) and falls back to its Prescott (SSE3)
// kernels, which made every GEMM here 3-5× slower (BENCHMARKS.md). When the loaded OpenBLAS has
// picked such a pre-AVX2 core on a CPU with AVX2 or AVX-512, this names the core it should use.
const char* openblas_core_override();

// The core the loaded OpenBLAS runs its kernels for, or null under another BLAS.
const char* blas_core_name();

// Unless the user set them (or SARQC_NO_REEXEC is set): OMP_WAIT_POLICY=PASSIVE and
// OPENBLAS_THREAD_TIMEOUT=4 (idle threads of one pool otherwise spin on the cores the other pool
// needs: a 2-core CPU forward ran 40% faster), and OPENBLAS_CORETYPE when
// openblas_core_override() names one; then re-executes /proc/self/exe with the same arguments
// (about 0.5 s of library loading). Returns only when nothing changed or the restart failed.
void restart_with_cpu_environment(char** argv);

}  // namespace sarqc

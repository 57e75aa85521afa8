#pragma once
// `--nproc N` on one machine: this process starts N copies of itself as the ranks of one world
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, the variables
// torchrun sets) and waits for them. When one fails, the others get SIGTERM and, `grace` later,
// SIGKILL: no rank waits for a dead one.
#include <chrono>

namespace sarqc {

// argv: this process's arguments (the children get the same; they see RANK set and do not
// launch again). Returns the first failing rank's exit code (128 + signal when one was killed),
// or 0 when all succeeded.
int run_local_ranks(int nproc, char** argv,
                    std::chrono::seconds grace = std::chrono::seconds(30));

// Whether this process is a rank started by torchrun, srun or run_local_ranks (RANK is set).
bool launched_as_rank();

}  // namespace sarqc

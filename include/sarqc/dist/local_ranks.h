#pragma once
// `--nproc N` on one machine: this process starts N copies of itself as the ranks of one world
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, the variables
// torchrun sets) and waits for them. When one fails, the others get SIGTERM and, `grace` later,
// SIGKILL: no rank waits for a dead one. The first SIGINT, SIGTERM or SIGHUP (as SIGTERM) sent
// to the launcher is passed on to every rank (which save their state and stop; a rank that got
// the same signal directly ignores the launcher's copy), a second one ends them with SIGKILL,
// and the launcher returns their exit code. A rank gets SIGTERM when the launcher dies
// (kill -9). A rank that cannot be started stops those already started.
#include <chrono>

namespace sarqc {

// argv: this process's arguments (the children get the same; they see RANK set and do not
// launch again). Returns, when a rank refused to run (exit code 2-5), the lowest rank's such
// code; else the first failing rank's exit code (128 + signal when one was killed); 0 when all
// succeeded.
// Throws a usage error naming --nproc outside 1..max_local_ranks(), before starting anything.
int run_local_ranks(int nproc, char** argv,
                    std::chrono::seconds grace = std::chrono::seconds(30));

// The most ranks --nproc starts: 4 per usable core (each rank computes, and holds a layer and
// its statistics in memory; a thousand would exhaust the machine before they could meet).
int max_local_ranks();

// A TCP port free on the loopback right now (the kernel's choice for port 0): the launcher's
// MASTER_PORT. Throws a runtime error when no socket can be bound.
int free_loopback_port();

// Whether this process is a rank started by torchrun, srun or run_local_ranks (RANK is set).
bool launched_as_rank();

}  // namespace sarqc

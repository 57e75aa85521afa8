#pragma once
// Crash injection for the resume tests: with SARQC_FAULT=NAME or NAME:K in the environment, the
// K-th (default first) time the process reaches fault_point("NAME") it kills itself with SIGKILL,
// as an out-of-memory kill or a preempted node would: no destructor, flush or handler runs.
// Points: forward (calibration forward), rounding (a module rounded, not yet written),
// write-tensor (half of a tensor's bytes written), write-file (a small file such as state.json
// or config.json written under its temporary name), save-state (between the steps of saving the
// resume state), publish (between the steps of publishing the output). Without the variable a
// fault point costs one relaxed load.
namespace sarqc {

void fault_point(const char* name);

}  // namespace sarqc

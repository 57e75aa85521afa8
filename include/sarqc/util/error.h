#pragma once
// User-facing errors. Every failure a user can cause (bad flag, bad file) is a sarqc::Error whose
// message is one line naming the file/field and what was expected; the CLI maps the kind to an
// exit code. Internal invariants use TORCH_INTERNAL_ASSERT instead.
#include <stdexcept>
#include <string>

namespace sarqc {

enum class ErrorKind {
  Usage,           // wrong flags or combination of flags
  BadInput,        // a file or its contents is missing, malformed or unsupported
  Runtime,         // the environment failed (I/O error, out of memory, device error)
  NotImplemented,  // a feature announced in the CLI that this version does not have yet
  StateConflict,   // a saved state of an interrupted run differs from this command
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Process exit codes (documented in README.md). Stable: scripts depend on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitRuntime = 1,
  kExitUsage = 2,
  kExitBadInput = 3,
  kExitNotImplemented = 4,
  kExitStateConflict = 5,
};

int exit_code_for(ErrorKind kind);

[[noreturn]] void throw_usage(const std::string& message);
[[noreturn]] void throw_bad_input(const std::string& message);
[[noreturn]] void throw_runtime(const std::string& message);

}  // namespace sarqc

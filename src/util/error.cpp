#include "sarqc/util/error.h"

namespace sarqc {

int exit_code_for(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Usage: return kExitUsage;
    case ErrorKind::BadInput: return kExitBadInput;
    case ErrorKind::Runtime: return kExitRuntime;
    case ErrorKind::NotImplemented: return kExitNotImplemented;
    case ErrorKind::StateConflict: return kExitStateConflict;
  }
  return kExitRuntime;
}

void throw_usage(const std::string& message) { throw Error(ErrorKind::Usage, message); }
void throw_bad_input(const std::string& message) { throw Error(ErrorKind::BadInput, message); }
void throw_runtime(const std::string& message) { throw Error(ErrorKind::Runtime, message); }

}  // namespace sarqc

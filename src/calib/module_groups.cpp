#include "sarqc/calib/module_groups.h"

namespace sarqc {

int sequential_group(const LinearModule& m) {
  switch (m.role) {
    case LinearRole::Q:
    case LinearRole::K:
    case LinearRole::V: return 0;
    case LinearRole::O: return 1;
    case LinearRole::Gate:
    case LinearRole::Up: return 2;
    case LinearRole::Down: return 3;
    default: return -1;  // routers and the shared-expert gate stay unquantized
  }
}

std::string parent_of(const std::string& local_name) {
  return local_name.substr(0, local_name.rfind('.'));
}

std::string input_key(const LinearModule& m) {
  switch (m.role) {
    case LinearRole::Q:
    case LinearRole::K:
    case LinearRole::V: return "attention";
    case LinearRole::Gate:
    case LinearRole::Up: return parent_of(m.local_name);
    default: return m.local_name;
  }
}

bool feeds_key(const LinearModule& m) {
  return m.role != LinearRole::K && m.role != LinearRole::V && m.role != LinearRole::Up;
}

}  // namespace sarqc

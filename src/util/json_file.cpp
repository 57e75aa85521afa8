#include "sarqc/util/json_file.h"

#include <fmt/format.h>

#include "sarqc/util/error.h"
#include "sarqc/util/file.h"

namespace sarqc {

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw_bad_input(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
}

}  // namespace sarqc

#pragma once
#include <filesystem>

#include <nlohmann/json.hpp>

namespace sarqc {

// Parses a JSON file; throws a bad-input Error "<path>: not valid JSON: ..." or "cannot open".
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace sarqc

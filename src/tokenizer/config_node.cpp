#include "sarqc/tokenizer/config_node.h"

#include <fmt/format.h>

#include "sarqc/util/error.h"

namespace sarqc::tokenizer {

ConfigNode::ConfigNode(const nlohmann::json& value, std::string file)
    : ConfigNode(value, std::move(file), true) {}

ConfigNode::ConfigNode(const nlohmann::json& value, std::string where, bool root)
    : value_(&value), where_(std::move(where)), root_(root) {}

// "/m/tokenizer.json: model", then "/m/tokenizer.json: model.vocab".
std::string ConfigNode::name_of(const char* key) const {
  return where_ + (root_ ? ": " : ".") + key;
}

void ConfigNode::fail(const std::string& message) const {
  throw_bad_input(fmt::format("{}: {}", where_, message));
}

std::string ConfigNode::type() const {
  if (!value_->is_object()) fail(fmt::format("must be an object, got {}", value_->type_name()));
  return string("type");
}

ConfigNode ConfigNode::typed() const {
  return ConfigNode(*value_, where_ + " (" + type() + ")", root_);
}

bool ConfigNode::has(const char* key) const {
  return value_->is_object() && value_->contains(key) && !(*value_)[key].is_null();
}

ConfigNode ConfigNode::child(const char* key) const {
  if (!value_->is_object()) fail(fmt::format("must be an object, got {}", value_->type_name()));
  if (!value_->contains(key)) fail(fmt::format("missing '{}'", key));
  return ConfigNode((*value_)[key], name_of(key), false);
}

ConfigNode ConfigNode::child_or_null(const char* key) const {
  static const nlohmann::json null_value;
  return has(key) ? child(key) : ConfigNode(null_value, name_of(key), false);
}

std::vector<ConfigNode> ConfigNode::array(const char* key) const {
  const ConfigNode node = child(key);
  if (!node.value().is_array())
    node.fail(fmt::format("must be an array, got {}", node.value().type_name()));
  std::vector<ConfigNode> items;
  for (size_t i = 0; i < node.value().size(); ++i)
    items.push_back(ConfigNode(node.value()[i], fmt::format("{}[{}]", node.where(), i), false));
  return items;
}

std::string ConfigNode::string(const char* key) const {
  const ConfigNode node = child(key);
  if (!node.value().is_string())
    node.fail(fmt::format("must be a string, got {}", node.value().dump()));
  return node.value().get<std::string>();
}

std::string ConfigNode::string_or(const char* key, const std::string& fallback) const {
  return has(key) ? string(key) : fallback;
}

bool ConfigNode::boolean_or(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  const ConfigNode node = child(key);
  if (!node.value().is_boolean())
    node.fail(fmt::format("must be true or false, got {}", node.value().dump()));
  return node.value().get<bool>();
}

int64_t ConfigNode::integer(const char* key) const {
  const ConfigNode node = child(key);
  if (!node.value().is_number_integer())
    node.fail(fmt::format("must be an integer, got {}", node.value().dump()));
  return node.value().get<int64_t>();
}

Pattern read_pattern(const ConfigNode& node) {
  if (node.has("Regex")) return Pattern::regex(node.string("Regex"), node.where());
  if (node.has("String")) return Pattern::literal(node.string("String"), node.where());
  node.fail(fmt::format("must be {{\"Regex\": ...}} or {{\"String\": ...}}, got {}",
                        node.value().dump()));
}

}  // namespace sarqc::tokenizer

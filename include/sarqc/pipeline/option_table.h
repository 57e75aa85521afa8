#pragma once
// Every setting of `sarqc quantize` as one row: the CLI's flags and --help, the --config recipe
// loader and the resume fingerprint are generated from this table, and quantization_config
// records the rows that say so (tests/pipeline/test_option_table.cpp walks it). A new option is
// one row here plus its field in QuantizeOptions.
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "sarqc/pipeline/quantize.h"

namespace sarqc {

enum class OptionKind {
  Flag,     // true/false; on the command line --name (and --negation when the row has one)
  Integer,  // a whole number
  Number,   // a real number
  Text,     // free text (a path, or a small grammar such as --lambda's)
  Choice,   // one of `choices`
};

// Where a row reaches besides QuantizeOptions (bits of OptionRow::reach).
enum OptionReach : unsigned {
  kOnCommandLine = 1u << 0,  // a `quantize` flag, --name
  kInRecipe = 1u << 1,       // a --config recipe may set it (key name or name_with_underscores)
  kInFingerprint = 1u << 2,  // a resumed run must have the same value ("option NAME")
  kRecorded = 1u << 3,       // written at `recorded_as` in quantization_config, as given (the
                             // group size and MSE clip as the plan resolved them)
};

struct OptionRow {
  std::string name;  // "group-size": the flag --group-size, the recipe key group_size
  OptionKind kind;
  std::string help;
  unsigned reach = 0;
  std::vector<std::string> choices;  // Choice: the accepted words
  std::string negation;              // Flag: a second flag that sets false ("no-mse-clip")
  bool required = false;             // the command line must give it
  std::string recorded_as;           // kRecorded: a JSON pointer into quantization_config
  // A valid non-default value and the rows it needs set first (their name and value), for the
  // table's test: e.g. --alpha needs an interp method.
  std::string example;
  std::vector<std::pair<std::string, std::string>> example_needs;
  // The value in `o` (JSON-typed: what quantization_config records).
  std::function<nlohmann::json(const QuantizeOptions& o)> get;
  // Parses `text` as the command line spells it (a Flag takes "true" or "false"), checks it and
  // assigns it; throws a usage error naming --name and what it expected.
  std::function<void(QuantizeOptions& o, const std::string& text)> set;
};

const std::vector<OptionRow>& quantize_option_table();

// The row named `name` ("group-size" or "group_size"), or nullptr.
const OptionRow* find_quantize_option(const std::string& name);

// A row's value as the command line spells it ("3", "true", "gar", "" for an unset path).
std::string option_text(const nlohmann::json& value);

// Rules between rows, checked after every source (flags, recipe) has been applied: --sym with
// --asym, --act-order with another --order. `given` maps the rows that were set to their text.
void check_option_combinations(const std::map<std::string, std::string>& given);

// A --config recipe: a JSON object of row names and values (string, number or boolean; a
// flag's negation, such as "no_mse_clip": true, sets its row to the opposite). Rows in `given`
// (set on the command line), and the rows of their group, keep their value; every other key is
// applied in the file's order and added to `given` with its text. Unknown keys, rows no recipe may set (`command_line_only` names the
// flags outside the table, such as --nproc) and values of the wrong type are usage errors naming
// the file and the key.
void apply_recipe(QuantizeOptions& o, const nlohmann::json& recipe, const std::string& file,
                  std::map<std::string, std::string>& given,
                  const std::vector<std::string>& command_line_only = {});

}  // namespace sarqc

#include <algorithm>
#include <iostream>
#include <memory>
#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "sarqc/dist/local_ranks.h"
#include "sarqc/pipeline/option_table.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/util/device.h"
#include "sarqc/util/error.h"
#include "sarqc/util/json_file.h"

namespace sarqc::cli {
namespace {

// A row's flag: its text as given (a Flag row's value lands in `on`).
struct FlagValue {
  const OptionRow* row = nullptr;
  CLI::Option* option = nullptr;
  std::string text;
  bool on = false;
};

std::string type_name(const OptionRow& row) {
  switch (row.kind) {
    case OptionKind::Integer: return "INT";
    case OptionKind::Number: return "NUM";
    case OptionKind::Choice: return fmt::format("{{{}}}", fmt::join(row.choices, ","));
    default: return "TEXT";
  }
}

// --nproc N, decimal ("0010" is 10), 1 .. max_local_ranks(); checked before any rank starts.
int parse_nproc(const std::string& text) {
  const int limit = max_local_ranks();
  const std::string digits = text.substr(std::min(text.find_first_not_of('0'), text.size()));
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos ||
      digits.size() > 9 || digits.empty() || std::stoi(digits) > limit)
    throw_usage(fmt::format("--nproc '{}': expected an integer from 1 to {} (4 ranks per usable "
                            "core; this process may use {})",
                            text, limit, usable_cores()));
  return std::stoi(digits);
}

}  // namespace

// Every quantize flag comes from the option table (sarqc/pipeline/option_table.h); only
// --config, --nproc and --json, which are not settings of the quantization, are added here.
Command add_quantize_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "quantize", "Quantize a model layer by layer and write a GPTQ-format checkpoint");
  auto values = std::make_shared<std::vector<FlagValue>>();
  const QuantizeOptions defaults;
  for (const OptionRow& row : quantize_option_table()) {
    if (!(row.reach & kOnCommandLine)) continue;
    FlagValue v;
    v.row = &row;
    values->push_back(v);
  }
  for (FlagValue& v : *values) {  // the vector no longer grows: pointers into it stay valid
    const OptionRow& row = *v.row;
    if (row.kind == OptionKind::Flag) {
      const std::string names =
          "--" + row.name + (row.negation.empty() ? "" : ",!--" + row.negation);
      v.option = sub->add_flag(names, v.on, row.help);
    } else {
      v.option = sub->add_option("--" + row.name, v.text, row.help)->type_name(type_name(row));
      const std::string shown = option_text(row.get(defaults));
      if (!shown.empty() && !row.required) v.option->default_str(shown);
      if (row.required) v.option->required();
    }
  }
  auto config = std::make_shared<std::string>();
  sub->add_option("--config", *config,
                  "Recipe: a JSON file of flag names and values (configs/*.json); flags given "
                  "on the command line override it");
  auto nproc = std::make_shared<std::string>("1");
  sub->add_option("--nproc", *nproc,
                  "Start this many ranks on this machine (data-parallel calibration over c10d "
                  "with Gloo), at most 4 per usable core; torchrun and srun set "
                  "RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT instead")
      ->type_name("INT")
      ->capture_default_str();
  auto json = std::make_shared<bool>(false);
  sub->add_flag("--json", *json, "Print the report (also in OUT/report.json) as JSON");
  return {sub, [values, config, nproc, json](const GlobalOptions& global) {
            QuantizeOptions o;
            std::map<std::string, std::string> given;
            for (const FlagValue& v : *values) {
              if (v.option->count() == 0) continue;
              const std::string text =
                  v.row->kind == OptionKind::Flag ? (v.on ? "true" : "false") : v.text;
              v.row->set(o, text);
              given[v.row->name] = text;
            }
            if (!config->empty())
              apply_recipe(o, read_json_file(*config), *config, given, {"nproc", "json", "config"});
            check_option_combinations(given);
            // Each flag's value is checked once, here, before any rank starts (what depends on
            // the model or the device, each rank finds). The launcher touches no device (a CUDA
            // context in it would hold GPU memory for the whole run) and starts no threads.
            const int ranks = parse_nproc(*nproc);
            if (ranks > 1 && !launched_as_rank()) {
              apply_logging_and_check_threads(global);
              return run_local_ranks(ranks, global.argv);
            }
            o.compute.device = apply_global_options(global);
            const QuantizeReport report = quantize(o);
            if (*json)
              std::cout << to_json(report).dump() << std::endl;
            else
              std::cout << to_text(report) << std::flush;
            return 0;
          }};
}

}  // namespace sarqc::cli

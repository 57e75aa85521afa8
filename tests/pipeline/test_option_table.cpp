// The option table reaches every place each row says it reaches: the recipe loader, the resume
// fingerprint and quantization_config (the CLI's --help is checked in tests/cli/test_cli.cpp).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>
#include <tuple>
#include <vector>

#include "sarqc/model/weights.h"
#include "sarqc/pipeline/checkpoint_writer.h"
#include "sarqc/pipeline/option_table.h"
#include "sarqc/pipeline/plan.h"
#include "sarqc/pipeline/run_state.h"
#include "sarqc/util/error.h"
#include "test_support.h"

namespace sarqc {
namespace {

using nlohmann::json;

const OptionRow& row_named(const std::string& name) {
  const OptionRow* row = find_quantize_option(name);
  EXPECT_NE(row, nullptr) << name;
  return *row;
}

// The options a row's example needs, then (when `with_example`) the example itself.
QuantizeOptions options_for(const OptionRow& row, bool with_example) {
  QuantizeOptions o;
  for (const auto& [name, value] : row.example_needs) row_named(name).set(o, value);
  if (with_example) row.set(o, row.example);
  return o;
}

// The example as a recipe writes it: numbers as numbers, flags as booleans.
json recipe_value(const OptionRow& row) {
  if (row.kind == OptionKind::Flag) return row.example == "true";
  if (row.kind == OptionKind::Integer || row.kind == OptionKind::Number)
    return json::parse(row.example);
  return row.example;
}

std::string underscored(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

TEST(OptionTable, RowsAreUniqueAndTheirExamplesChangeAndRoundTrip) {
  std::set<std::string> names;
  for (const OptionRow& row : quantize_option_table()) {
    SCOPED_TRACE(row.name);
    EXPECT_TRUE(names.insert(row.name).second) << "two rows named " << row.name;
    EXPECT_FALSE(row.help.empty());
    EXPECT_EQ(row.kind == OptionKind::Choice, !row.choices.empty());
    EXPECT_EQ((row.reach & kRecorded) != 0, !row.recorded_as.empty());
    const QuantizeOptions base = options_for(row, false), set = options_for(row, true);
    EXPECT_NE(row.get(set), row.get(base)) << "the example must differ from the default";
    // The value as the command line spells it parses back to itself.
    QuantizeOptions again = base;
    row.set(again, option_text(row.get(set)));
    EXPECT_EQ(row.get(again), row.get(set));
    // Each choice is accepted and read back.
    for (const std::string& choice : row.choices) {
      QuantizeOptions c = base;
      row.set(c, choice);
      EXPECT_EQ(option_text(row.get(c)), choice);
    }
  }
}

TEST(OptionTable, BadValuesAreUsageErrorsNamingTheFlag) {
  for (const OptionRow& row : quantize_option_table()) {
    if (row.kind == OptionKind::Text && row.name != "lambda") continue;  // paths take any text
    SCOPED_TRACE(row.name);
    for (const std::string bad : {"bogus", "", "1x", "-5"}) {
      if (row.name == "lambda" && bad.empty()) continue;  // "" is the preset's λ
      QuantizeOptions o;
      try {
        row.set(o, bad);
        ADD_FAILURE() << "--" << row.name << " accepted '" << bad << "'";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Usage);
        EXPECT_NE(std::string(e.what()).find("--" + row.name), std::string::npos) << e.what();
      }
    }
  }
}

TEST(OptionTable, RecipesSetExactlyTheRecipeRows) {
  for (const OptionRow& row : quantize_option_table()) {
    SCOPED_TRACE(row.name);
    QuantizeOptions o = options_for(row, false);
    std::map<std::string, std::string> given;
    const json recipe = {{underscored(row.name), recipe_value(row)}};
    if (row.reach & kInRecipe) {
      apply_recipe(o, recipe, "r.json", given);
      EXPECT_EQ(row.get(o), row.get(options_for(row, true)));
      EXPECT_EQ(given.count(row.name), 1u);
      // A flag given on the command line wins over the recipe.
      QuantizeOptions kept = options_for(row, false);
      std::map<std::string, std::string> on_command_line = {{row.name, row.example}};
      apply_recipe(kept, recipe, "r.json", on_command_line);
      EXPECT_EQ(row.get(kept), row.get(options_for(row, false)));
    } else {
      try {
        apply_recipe(o, recipe, "r.json", given);
        ADD_FAILURE() << "a recipe set " << row.name;
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Usage);
        EXPECT_NE(std::string(e.what()).find("r.json"), std::string::npos) << e.what();
      }
    }
  }
}

// The review's two recipe bugs: {"sym": false} was symmetric, {"nproc": 2} one process.
TEST(OptionTable, RecipeSymFalseIsAsymmetricAndNprocIsRefused) {
  QuantizeOptions o;
  std::map<std::string, std::string> given;
  apply_recipe(o, json{{"sym", false}}, "r.json", given);
  EXPECT_FALSE(o.grid.sym);
  given.clear();
  try {
    apply_recipe(o, json{{"nproc", 2}}, "r.json", given, {"nproc"});
    ADD_FAILURE() << "nproc accepted from a recipe";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("only be given on the command line (--nproc)"),
              std::string::npos)
        << e.what();
  }
  // A boolean where a number belongs, and the reverse, name the key.
  for (const json& bad : {json{{"bits", true}}, json{{"sym", "false"}}, json{{"seed", -1}}}) {
    given.clear();
    QuantizeOptions b;
    EXPECT_THROW(apply_recipe(b, bad, "r.json", given), Error) << bad.dump();
  }
  given.clear();
  QuantizeOptions both;
  apply_recipe(both, json{{"sym", true}, {"asym", true}}, "r.json", given);
  EXPECT_THROW(check_option_combinations(given), Error);
  // Rows that set one field: agreeing values pass, and a flag on the command line overrides
  // the recipe's row of the same group (configs/gptq-w4-deploy.json has "sym": true).
  given.clear();
  apply_recipe(both, json{{"sym", false}, {"asym", true}}, "r.json", given);
  EXPECT_NO_THROW(check_option_combinations(given));
  for (const auto& [flag, key, value] :
       std::vector<std::tuple<std::string, std::string, json>>{{"asym", "sym", true},
                                                              {"act-order", "order", "gar"}}) {
    QuantizeOptions o;
    row_named(flag).set(o, "true");
    std::map<std::string, std::string> command_line = {{flag, "true"}};
    apply_recipe(o, json{{key, value}}, "r.json", command_line);
    EXPECT_NO_THROW(check_option_combinations(command_line)) << flag;
    EXPECT_EQ(row_named(flag).get(o), json(true)) << flag << " kept";
  }
  // A negation key sets its row to the opposite.
  given.clear();
  QuantizeOptions negated;
  apply_recipe(negated, json{{"no_mse_clip", true}}, "r.json", given);
  EXPECT_FALSE(negated.grid.mse_clip);
}

TEST(OptionTable, TheFingerprintHoldsExactlyTheFingerprintedRows) {
  SARQC_REQUIRE_FIXTURES();
  const ModelWeights weights = ModelWeights::open(test::fixture_model("stories260K"));
  for (const OptionRow& row : quantize_option_table()) {
    SCOPED_TRACE(row.name);
    const json before = run_fingerprint_items(weights, options_for(row, false), "");
    const json after = run_fingerprint_items(weights, options_for(row, true), "");
    if (row.reach & kInFingerprint) {
      ASSERT_TRUE(after.contains("option " + row.name));
      EXPECT_NE(before.at("option " + row.name), after.at("option " + row.name));
    } else {
      // Only through the row it spells differently (--asym is sym = false): the other items,
      // by name, are what no option decides.
      for (const auto& [key, value] : after.items()) {
        if (before.at(key) == value) continue;
        const OptionRow* other =
            key.rfind("option ", 0) == 0 ? find_quantize_option(key.substr(7)) : nullptr;
        EXPECT_TRUE(other != nullptr && other != &row && (other->reach & kInFingerprint))
            << key << " changed";
      }
    }
  }
}

TEST(OptionTable, RecordedRowsReachQuantizationConfigAsGiven) {
  SARQC_REQUIRE_FIXTURES();
  const ModelWeights weights = ModelWeights::open(test::fixture_model("babyllama-tok105"));
  auto config_of = [&](QuantizeOptions o) {
    o.calib_tokens = "ids.json";  // a source for the methods that need data (never read here)
    QuantizePlan plan = plan_quantize(o);
    plan.fit_to_model(weights.layout());
    return quantization_config(weights.layout(), plan, o, QuantizeReport{}, false, "");
  };
  for (const OptionRow& row : quantize_option_table()) {
    if (!(row.reach & kRecorded)) continue;
    SCOPED_TRACE(row.name);
    const json::json_pointer at(row.recorded_as);
    const QuantizeOptions set = options_for(row, true);
    const json before = config_of(options_for(row, false)), after = config_of(set);
    ASSERT_TRUE(after.contains(at));
    EXPECT_EQ(after.at(at), row.get(set));
    EXPECT_NE(before.at(at), after.at(at));
  }
}

}  // namespace
}  // namespace sarqc

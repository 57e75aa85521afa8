// End-to-end: the real `sarqc` binary, its exit codes, stdout/stderr discipline.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cctype>

#include <nlohmann/json.hpp>

#include "sarqc/pipeline/option_table.h"
#include "sarqc/util/device.h"
#include "sarqc/util/error.h"
#include "cli/run_sarqc.h"
#include "test_support.h"
#include "tokenizer/tiny_tokenizers.h"

namespace sarqc {
namespace {

using test::count_lines;
using test::run_sarqc;
using test::RunResult;

TEST(Cli, VersionAndHelp) {
  RunResult r = run_sarqc({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("sarqc 0.", 0), 0u) << r.out;
  for (const char* sub : {"inspect", "eval", "quantize"}) {
    r = run_sarqc({sub, "--help"});
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_NE(r.out.find("--model"), std::string::npos) << sub;
  }
  r = run_sarqc({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--log-level", "--threads", "--device", "--version"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
}

// quantize's flags are the option table's command-line rows, each with its help and choices.
TEST(Cli, QuantizeHelpListsEveryCommandLineRowOfTheOptionTable) {
  const RunResult r = run_sarqc({"quantize", "--help"});
  ASSERT_EQ(r.exit_code, 0);
  // Where "--NAME" stands as a whole flag (not the start of a longer one).
  auto flag_at = [&](const std::string& name) {
    for (size_t at = r.out.find("--" + name); at != std::string::npos;
         at = r.out.find("--" + name, at + 1)) {
      const char next = r.out[at + 2 + name.size()];
      if (!std::isalnum(static_cast<unsigned char>(next)) && next != '-') return at;
    }
    return std::string::npos;
  };
  for (const OptionRow& row : quantize_option_table()) {
    const auto at = flag_at(row.name);
    if (!(row.reach & kOnCommandLine)) {
      EXPECT_EQ(at, std::string::npos) << row.name << " has no flag";
      continue;
    }
    ASSERT_NE(at, std::string::npos) << row.name;
    if (!row.negation.empty())
      EXPECT_NE(flag_at(row.negation), std::string::npos) << row.negation;
    // The row's own entry: up to the next flag's line.
    const std::string entry = r.out.substr(at, r.out.find("\n  --", at) - at);
    for (const auto& choice : row.choices)
      EXPECT_NE(entry.find(choice), std::string::npos) << row.name << " " << choice;
  }
}

TEST(Cli, UsageErrorsExitWithTwo) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"inspect"},
      {"inspect", "--model"},
      {"inspect", "--model", "x", "--bogus"},
      {"quantize", "--model", "m", "--out", "o", "--bits", "5"},
      {"quantize", "--model", "m", "--out", "o", "--order", "random"},
      {"quantize", "--model", "m", "--out", "o", "--order", "gar", "--act-order"},
      {"quantize", "--model", "m", "--out", "o", "--group-params", "later"},
      {"--threads", "-1", "inspect", "--model", "x"},
      {"--log-level", "loud", "inspect", "--model", "x"},
      {"--device", "tpu", "inspect", "--model", "x"},
  };
  for (const auto& args : cases) {
    const RunResult r = run_sarqc(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_EQ(r.exit_code, kExitUsage) << joined << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("sarqc: error: ", 0), 0u) << joined << "\n" << r.err;
    EXPECT_EQ(count_lines(r.err), 1u) << joined << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << joined << ": stdout must stay clean: " << r.out;
  }
}

TEST(Cli, ColumnOrderErrorsNameTheFlagAndTheAcceptedValues) {
  RunResult r = run_sarqc({"quantize", "--model", "m", "--out", "o", "--order", "random"});
  EXPECT_NE(r.err.find("--order 'random': expected one of natural, act, gar"), std::string::npos)
      << r.err;
  r = run_sarqc({"quantize", "--model", "m", "--out", "o", "--order", "natural", "--act-order"});
  EXPECT_NE(r.err.find("--act-order: contradicts --order natural"), std::string::npos) << r.err;
}

TEST(Cli, CudaDeviceWithoutGpuIsAUsageError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA GPU is present";
  SARQC_REQUIRE_FIXTURES();
  const RunResult r = run_sarqc(
      {"inspect", "--model", test::fixture_model("stories260K").string(), "--device", "cuda"});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("CUDA is not available"), std::string::npos) << r.err;
}

TEST(Cli, InspectJsonOnStdoutOnly) {
  SARQC_REQUIRE_FIXTURES();
  for (const char* model : {"stories260K", "babyllama-tok105"}) {
    const RunResult r =
        run_sarqc({"inspect", "--model", test::fixture_model(model).string(), "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);  // the whole of stdout is one JSON document
    EXPECT_EQ(j["config"]["num_hidden_layers"], 5);
    EXPECT_EQ(j["config"]["hidden_size"], std::string(model) == "stories260K" ? 64 : 128);
  }
}

TEST(Cli, InspectTextNamesWhatConfigSays) {
  SARQC_REQUIRE_FIXTURES();
  const RunResult r = run_sarqc(
      {"--threads", "1", "inspect", "--model", test::fixture_model("stories260K").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* fragment : {"layers       5 (dense)", "hidden       64  intermediate 172",
                               "heads 8 (kv 4, head_dim 8)", "260,032", "tokenizer.model"})
    EXPECT_NE(r.out.find(fragment), std::string::npos) << fragment << "\n" << r.out;
}

TEST(Cli, BadInputExitsWithThreeAndOneLine) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  // A truncated copy of a real checkpoint.
  std::filesystem::copy_file(test::fixture_model("stories260K") / "config.json",
                             dir / "config.json");
  const std::string bytes = test::read_bytes(test::fixture_model("stories260K") /
                                             "model.safetensors");
  test::write_bytes(dir / "model.safetensors", bytes.substr(0, bytes.size() / 2));
  RunResult r = run_sarqc({"inspect", "--model", dir.path().string()});
  EXPECT_EQ(r.exit_code, kExitBadInput);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("model.safetensors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("beyond the data buffer"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());

  r = run_sarqc({"inspect", "--model", (dir / "nope").string()});
  EXPECT_EQ(r.exit_code, kExitBadInput);
  EXPECT_NE(r.err.find("config.json: not found"), std::string::npos) << r.err;
}

TEST(Cli, QuantizeEndToEndAndItsErrors) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string model = test::fixture_model("babyllama-tok105").string();
  const std::string out = (dir / "q").string();
  RunResult r = run_sarqc({"quantize", "--model", model, "--out", (dir / "self").string(),
                           "--calib", "self", "--nsamples", "4", "--seqlen", "32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto self_qc = nlohmann::json::parse(test::read_bytes(dir / "self" / "config.json"));
  EXPECT_EQ(self_qc["quantization_config"]["meta"]["sarqc"]["calibration_file"]
                .get<std::string>()
                .rfind("self", 0),
            0u);
  r = run_sarqc({"quantize", "--model", model, "--out", out});
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_NE(r.err.find("needs calibration data"), std::string::npos) << r.err;
  r = run_sarqc({"quantize", "--model", model, "--out", out, "--sym", "--asym", "--method", "rtn"});
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));

  r = run_sarqc({"quantize", "--model", model, "--out", out, "--bits", "3", "--group-size", "32",
                 "--asym", "--calib", test::fixture_text("tinystories_train.txt").string(),
                 "--nsamples", "4", "--seqlen", "64", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 1u);
  const auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["totals"]["modules"], 35);
  EXPECT_EQ(report["totals"]["by_method"]["gptq"], 35);
  const auto qc = nlohmann::json::parse(test::read_bytes(dir / "q" / "config.json"))["quantization_config"];
  EXPECT_EQ(qc["checkpoint_format"], "gptq_v2");
  EXPECT_EQ(qc["sym"], false);
  r = run_sarqc({"quantize", "--model", model, "--out", out, "--method", "rtn"});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  // An objective without a calibrated backend only makes sense through the scale search.
  r = run_sarqc({"quantize", "--model", model, "--out", (dir / "o").string(), "--method", "rtn",
                 "--objective", "sarqc", "--lambda", "0.1"});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("--scale-search"), std::string::npos) << r.err;
  r = run_sarqc({"quantize", "--model", model, "--out", (dir / "o").string(), "--method", "beam",
                 "--beam-rows", "-1", "--calib", "self"});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("--beam-rows '-1': expected an integer >= 0"), std::string::npos) << r.err;
  r = run_sarqc({"quantize", "--model", model, "--out", (dir / "awq").string(), "--method", "awq",
                 "--objective", "sarqc+interp", "--lambda", "0.1", "--calib", "self",
                 "--group-size", "-1", "--nsamples", "4", "--seqlen", "32", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["totals"]["by_method"]["rtn"], 35);
  r = run_sarqc({"eval", "--model", out, "--data", test::fixture_text("tinystories_val.txt").string(),
                 "--max-windows", "2", "--reference", model, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GT(nlohmann::json::parse(r.out)["kld_mean"].get<double>(), 0.0);
}

TEST(Cli, QuantizeRecipesAreOverriddenByFlags) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string model = test::fixture_model("babyllama-tok105").string();
  const std::string recipe = (dir / "r.json").string();
  test::write_bytes(recipe, R"({"method": "coreq", "bits": 3, "group_size": 32, "nsamples": 4,
                               "seqlen": 32, "mixup": 3.0, "sym": false})");
  RunResult r = run_sarqc({"quantize", "--model", model, "--out", (dir / "q").string(), "--config",
                           recipe, "--bits", "4", "--calib",
                           test::fixture_text("tinystories_train.txt").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto qc = nlohmann::json::parse(test::read_bytes(dir / "q" / "config.json"))["quantization_config"];
  EXPECT_EQ(qc["bits"], 4);  // the flag wins
  EXPECT_EQ(qc["group_size"], 32);
  EXPECT_EQ(qc["meta"]["sarqc"]["method"], "coreq");
  EXPECT_EQ(qc["meta"]["sarqc"]["mixup"], 3.0);
  EXPECT_EQ(qc["meta"]["sarqc"]["nsamples"], 4);
  EXPECT_EQ(qc["sym"], false);  // {"sym": false} is the asymmetric grid
  test::write_bytes(recipe, R"({"nproc": 2})");
  r = run_sarqc({"quantize", "--model", model, "--out", (dir / "q2").string(), "--config", recipe});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("'nproc' can only be given on the command line"), std::string::npos)
      << r.err;
  test::write_bytes(recipe, R"({"bitz": 3})");
  r = run_sarqc({"quantize", "--model", model, "--out", (dir / "q2").string(), "--config", recipe});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("'bitz' is not a quantize setting"), std::string::npos) << r.err;
  test::write_bytes(recipe, R"({"bits": 5})");
  r = run_sarqc({"quantize", "--model", model, "--out", (dir / "q2").string(), "--config", recipe});
  EXPECT_EQ(r.exit_code, kExitUsage) << r.err;
  test::write_bytes(recipe, R"({"method": "gptq", "alpha": 0.3})");
  r = run_sarqc({"quantize", "--model", model, "--out", (dir / "q2").string(), "--config", recipe,
                 "--calib", "self"});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("apply only to the interp objectives"), std::string::npos) << r.err;
  // The shipped recipes apply cleanly: each run gets past the recipe and stops only at the
  // missing calibration data.
  for (const char* f : {"beam-w3.json", "gptq-w4-deploy.json", "sarqc-beam-w3.json"}) {
    r = run_sarqc({"quantize", "--model", model, "--out", (dir / "q3").string(), "--config",
                   std::string(SARQC_SOURCE_DIR) + "/configs/" + f});
    EXPECT_EQ(r.exit_code, kExitUsage) << f;
    EXPECT_NE(r.err.find("needs calibration data"), std::string::npos) << f << r.err;
  }
}

TEST(Cli, EvalPrintsOneJsonRecordMatchingTheReference) {
  SARQC_REQUIRE_FIXTURES();
  const nlohmann::json ref =
      nlohmann::json::parse(test::read_bytes(test::fixtures_dir() / "reference.json"));
  RunResult r = run_sarqc({"eval", "--model", test::fixture_model("stories260K").string(),
                           "--data", test::fixture_text("tinystories_val.txt").string(),
                           "--max-windows", "4", "--seqlen", "128", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 1u) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["windows"], 4);
  EXPECT_EQ(j["scored_tokens"], 512);
  EXPECT_EQ(j["total_tokens"], ref["stories260K"]["tinystories_val.txt"]["total_tokens_in_file"]);
  EXPECT_GT(j["ppl"].get<double>(), 1.0);
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);
}

TEST(Cli, EvalBadInputExitsWithThreeAndOneLine) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string model = test::fixture_model("stories260K").string();
  test::write_bytes(dir / "empty.txt", "");
  test::write_bytes(dir / "short.txt", "Once upon a time there was a cat.");
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"--data", (dir / "empty.txt").string()}, kExitBadInput, "the file is empty"},
      {{"--data", (dir / "short.txt").string()}, kExitBadInput, "one window of --seqlen 512 needs 513"},
      {{"--data", (dir / "missing.txt").string()}, kExitBadInput, "missing.txt"},
      {{"--data", (dir / "short.txt").string(), "--reference",
        test::fixture_model("babyllama-tok105").string()},
       kExitBadInput, "vocab_size 105 differs from the model's 512"},
      {{"--data", (dir / "short.txt").string(), "--seqlen", "0"}, kExitUsage,
       "--seqlen: expected a positive integer, got '0'"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"eval", "--model", model};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const RunResult r = run_sarqc(args);
    EXPECT_EQ(r.exit_code, c.code) << r.err;
    // Progress logs may precede it; the error itself is the last line, and a single one.
    const size_t at = r.err.rfind("sarqc: error: ");
    ASSERT_NE(at, std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("sarqc: error: "), at) << r.err;
    EXPECT_EQ(r.err.find('\n', at), r.err.size() - 1) << r.err;
    EXPECT_NE(r.err.find(c.needle, at), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST(Cli, EvalWarnsWhenSeqlenExceedsTheTrainedContext) {
  SARQC_REQUIRE_FIXTURES();
  const RunResult r = run_sarqc({"eval", "--model", test::fixture_model("babyllama-tok105").string(),
                                 "--data", test::fixture_text("tinystories_val.txt").string(),
                                 "--seqlen", "300", "--max-windows", "1", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("exceeds the model's max_position_embeddings 256"), std::string::npos)
      << r.err;
}

TEST(Cli, GenerateAndMakeMoe) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string model = test::fixture_model("stories260K").string();
  RunResult r = run_sarqc({"make-moe", "--model", model, "--out", (dir / "moe").string(),
                           "--layout", "qwen2_moe", "--experts", "3", "--top-k", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_sarqc({"inspect", "--model", (dir / "moe").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["model_type"], "qwen2_moe") << r.out;
  r = run_sarqc({"make-moe", "--model", model, "--out", (dir / "moe").string()});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_NE(r.err.find("exists and is not empty"), std::string::npos) << r.err;
  r = run_sarqc({"generate", "--model", (dir / "moe").string(), "--prompt", "Once upon a time",
                 "--tokens", "5", "--ignore-eos", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["generated_ids"].size(), 5u);
  EXPECT_EQ(j["text"].get<std::string>().rfind("Once upon a time", 0), 0u);
}

TEST(Cli, TokenizeAFolderWithOnlyTokenizerFiles) {
  test::TempDir dir;
  test::write_tokenizer(dir.path(), test::tiny_byte_level_json());
  test::write_bytes(dir / "text.txt", "the the");
  RunResult r = run_sarqc({"tokenize", "--model", dir.path().string(), (dir / "text.txt").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "116 256 258\n");  // t, he, Ġthe
  r = run_sarqc({"tokenize", "--model", dir.path().string(), (dir / "text.txt").string(), "--json",
                 "--special"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"], nlohmann::json::array({300, 116, 256, 258}));
  EXPECT_EQ(j["count"], 4);
  EXPECT_EQ(j["bytes"], 7);
  EXPECT_EQ(j["tokenizer"]["kind"], "tokenizer.json BPE");

  r = run_sarqc({"tokenize", "--model", dir.path().string(), (dir / "missing.txt").string()});
  EXPECT_EQ(r.exit_code, kExitBadInput);
  EXPECT_NE(r.err.find("missing.txt"), std::string::npos) << r.err;
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  test::write_bytes(dir / "tokenizer.json", R"({"model": {"type": "Unigram"}})");
  r = run_sarqc({"tokenize", "--model", dir.path().string(), (dir / "text.txt").string()});
  EXPECT_EQ(r.exit_code, kExitBadInput);
  EXPECT_NE(r.err.find("model (Unigram): unsupported model type 'Unigram'"), std::string::npos)
      << r.err;
  EXPECT_TRUE(r.out.empty());
}

}  // namespace
}  // namespace sarqc

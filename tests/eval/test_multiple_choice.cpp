// `sarqc eval --task`: the task layouts read as lm-evaluation-harness's task configurations
// build their requests, and the per-choice log-likelihoods, acc and acc_norm against lm-eval
// itself (PyPI, transformers backend, its shipped piqa/arc_easy/hellaswag/winogrande configs on
// local files) on a fixture model; scripts/make_cloze.sh's tasks.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/run_sarqc.h"
#include "python_reference.h"
#include "sarqc/eval/multiple_choice.h"
#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/error.h"
#include "test_support.h"
#include "tokenizer/tiny_tokenizers.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Two items per layout, in the datasets' field layouts (HellaSwag with its WikiHow artifacts).
const char* kPiqa =
    R"({"goal": "How do you open a jar?", "sol1": "Twist the lid to the left.", "sol2": "Hit it with a spoon.", "label": 0}
{"goal": "Keep a cat warm", "sol1": "Give it a blanket.", "sol2": "Put it in the fridge.", "label": 1}
)";
const char* kArc =
    R"({"id": "a1", "question": "What does a dog say?", "choices": {"text": ["Woof", "Moo", "Meow"], "label": ["A", "B", "C"]}, "answerKey": "A"}
{"id": "a2", "question": "Which one is a color?", "choices": {"text": ["Red", "Table", "Run", "Happy"], "label": ["1", "2", "3", "4"]}, "answerKey": "1"}
)";
const char* kHellaswag =
    R"({"ind": 1, "activity_label": "Playing ball", "ctx_a": "Tim has a red ball.", "ctx_b": "he throws THE ball", "ctx": "", "endings": ["to his  dog [title] Spot.", "into the sky [header] and it flies.", "at the moon.", "to Sue."], "label": "3", "split": "val", "split_type": "indomain", "source_id": "x"}
{"ind": 2, "activity_label": "Cooking", "ctx_a": "Mom makes a cake.", "ctx_b": "she puts it", "ctx": "", "endings": ["in the oven.", "on the roof.", "in a shoe.", "under the bed."], "label": 0, "split": "val", "split_type": "indomain", "source_id": "y"}
)";
const char* kWinogrande =
    R"({"sentence": "Lily gave the toy to Max because _ was sad.", "option1": "Lily", "option2": "Max", "answer": "2"}
{"sentence": "The cat chased the mouse, but _ was too fast.", "option1": "the cat", "option2": "the mouse", "answer": "2"}
)";

fs::path write(const fs::path& dir, const std::string& name, const std::string& text) {
  test::write_bytes(dir / name, text);
  return dir / name;
}

TEST(MultipleChoice, LayoutsBuildLmEvalsRequests) {
  test::TempDir dir;
  // piqa.yaml: "Question: {{goal}}\nAnswer:" and " " + each solution.
  ChoiceTask t = read_choice_task(write(dir.path(), "piqa.jsonl", kPiqa));
  EXPECT_EQ(t.layout, "piqa");
  ASSERT_EQ(t.items.size(), 2u);
  EXPECT_EQ(t.items[0].requests[0].context, "Question: How do you open a jar?\nAnswer:");
  EXPECT_EQ(t.items[0].requests[1].continuation, " Hit it with a spoon.");
  EXPECT_EQ(t.items[1].gold, 1);
  // arc_easy.yaml: gold = choices.label.index(answerKey).
  t = read_choice_task(write(dir.path(), "arc.jsonl", kArc));
  EXPECT_EQ(t.items[1].requests[0].context, "Question: Which one is a color?\nAnswer:");
  EXPECT_EQ(t.items[1].requests[3].continuation, " Happy");
  EXPECT_EQ(t.items[0].gold, 0);
  // AI2's own layout of the same item.
  t = read_choice_task(write(
      dir.path(), "arc2.jsonl",
      R"({"question": {"stem": "What does a dog say?", "choices": [{"text": "Woof", "label": "A"}, {"text": "Moo", "label": "B"}]}, "answerKey": "B"})"));
  EXPECT_EQ(t.items[0].requests[0].context, "Question: What does a dog say?\nAnswer:");
  EXPECT_EQ(t.items[0].gold, 1);
  // hellaswag/utils.py: ctx_a + " " + ctx_b.capitalize(), " [title]" → ". ", "[...]" dropped,
  // "  " → " ", stripped.
  t = read_choice_task(write(dir.path(), "hellaswag.jsonl", kHellaswag));
  EXPECT_EQ(t.items[0].requests[0].context, "Playing ball: Tim has a red ball. He throws the ball");
  EXPECT_EQ(t.items[0].choices[0], "to his dog. Spot.");
  EXPECT_EQ(t.items[0].choices[1], "into the sky and it flies.");
  EXPECT_EQ(t.items[0].gold, 3);
  // winogrande: the context holds the option, the continuation is the rest of the sentence.
  t = read_choice_task(write(dir.path(), "winogrande.jsonl", kWinogrande));
  EXPECT_EQ(t.items[0].requests[1].context, "Lily gave the toy to Max because Max");
  EXPECT_EQ(t.items[0].requests[1].continuation, " was sad.");
  EXPECT_EQ(t.items[1].gold, 1);
}

TEST(MultipleChoice, BadLinesNameTheFileLineAndField) {
  test::TempDir dir;
  auto expect = [&](const std::string& text, const std::string& says) {
    const fs::path f = write(dir.path(), "bad.jsonl", text);
    try {
      read_choice_task(f);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::BadInput);
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  };
  expect(std::string(kPiqa) + "{\"goal\": \"x\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 2}\n",
         "bad.jsonl:3: 'label' must be a choice index in [0, 2)");
  expect("{\"goal\": \"x\", \"sol1\": 3, \"sol2\": \"b\", \"label\": 0}\n",
         ":1: 'sol1' must be a string");
  expect(
      "{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"1\"}\n",
      "no '_' blank");
  expect("{\"text\": \"what\"}\n", ":1: unknown layout");
  expect("not json\n", ":1:");
  expect(std::string(kPiqa) + kArc, ":3: a arc item in a piqa file");
  expect("\n", "no items");
}

TEST(MultipleChoice, LogLikelihoodsAccAndAccNormEqualLmEvaluationHarness) {
  SARQC_REQUIRE_FIXTURES();
  const auto [python, why] = test::venv_python(
      {"requirements-test.txt", "requirements-torch.txt", "requirements-lmeval.txt"});
  ASSERT_FALSE(python.empty())
      << "lm-evaluation-harness (PyPI, installed by scripts/venv.sh) is not available: " << why;
  test::TempDir dir;
  const fs::path model = test::fixture_model("stories260K");
  const fs::path scripts = fs::path(SARQC_SOURCE_DIR) / "scripts";
  const auto [made, made_out] = test::run_command(fmt::format(
      "bash {} {} {} --items 12", test::shell_quote((scripts / "make_cloze.sh").string()),
      test::shell_quote(test::fixture_text("tinystories_val.txt").string()),
      test::shell_quote((dir.path() / "cloze.jsonl").string())));
  ASSERT_EQ(made, 0) << made_out;
  const std::vector<std::pair<std::string, fs::path>> tasks = {
      {"piqa", write(dir.path(), "piqa.jsonl", kPiqa)},
      {"arc", write(dir.path(), "arc.jsonl", kArc)},
      {"hellaswag", write(dir.path(), "hellaswag.jsonl", kHellaswag)},
      {"winogrande", write(dir.path(), "winogrande.jsonl", kWinogrande)},
      {"cloze", dir.path() / "cloze.jsonl"}};
  std::string command = fmt::format(
      "{} {} {} {}", test::shell_quote(python),
      test::shell_quote(
          (fs::path(SARQC_SOURCE_DIR) / "tests" / "lmeval_reference" / "score_tasks.py").string()),
      test::shell_quote(model.string()), test::shell_quote((dir.path() / "reference.json").string()));
  for (const auto& [layout, file] : tasks)
    command += " " + test::shell_quote(layout + "=" + file.string());
  const auto [status, out] = test::run_command(command);
  ASSERT_EQ(status, 0) << out;
  const json reference = json::parse(test::read_bytes(dir.path() / "reference.json"));

  ChoiceEvalOptions o;
  o.model_dir = model;
  for (const auto& [layout, file] : tasks) o.task_files.push_back(file);
  const std::vector<ChoiceTaskResult> results = evaluate_choice_tasks(o);
  ASSERT_EQ(results.size(), tasks.size());
  for (size_t t = 0; t < tasks.size(); ++t) {
    SCOPED_TRACE(tasks[t].first);
    const ChoiceTaskResult& r = results[t];
    const json& ref = reference.at(tasks[t].second.string());
    EXPECT_EQ(r.layout, tasks[t].first);
    const auto& lls = ref.at("loglikelihoods");
    ASSERT_EQ(lls.size(), r.loglikelihoods.size());
    for (size_t i = 0; i < lls.size(); ++i) {
      ASSERT_EQ(lls[i].size(), r.loglikelihoods[i].size());
      for (size_t c = 0; c < lls[i].size(); ++c) {
        // Both in fp32 through the same weights: per token a few ulps of the logits, summed over
        // at most ~60 continuation tokens.
        const double expected = lls[i][c].get<double>();
        EXPECT_NEAR(r.loglikelihoods[i][c], expected, 1e-4 * (1 + std::abs(expected)))
            << "item " << i << " choice " << c;
      }
    }
    EXPECT_DOUBLE_EQ(r.acc, ref.at("acc").get<double>());
    if (!ref.at("acc_norm").is_null())
      EXPECT_DOUBLE_EQ(r.acc_norm, ref.at("acc_norm").get<double>());
  }
}

// A context that is only whitespace, with a tokenizer that adds no BOS (Qwen's): the whitespace
// moves into the continuation, and with an empty choice the continuation "  " is one token
// ("ĠĠ"), which left no input token to score it from: a chunk of width 0, an integer division
// by zero that killed the process. As for an empty context, the context is then the BOS token,
// or EOS without one (lm-eval's prefix token).
TEST(MultipleChoice, AContextThatTokenizesToNothingIsScoredFromThePrefixToken) {
  test::TempDir dir;
  const json config = {{"model_type", "llama"},        {"architectures", {"LlamaForCausalLM"}},
                       {"hidden_size", 16},            {"intermediate_size", 32},
                       {"num_hidden_layers", 1},       {"num_attention_heads", 2},
                       {"num_key_value_heads", 2},     {"vocab_size", 304},
                       {"max_position_embeddings", 16}, {"rms_norm_eps", 1e-5}};
  write_random_model(config, dir / "m", 5);
  json tokenizer = test::tiny_byte_level_json();
  tokenizer["post_processor"] = nullptr;  // no BOS added
  tokenizer["model"]["vocab"]["\xC4\xA0\xC4\xA0"] = 260;
  tokenizer["model"]["merges"].push_back(json::array({"\xC4\xA0", "\xC4\xA0"}));
  test::write_tokenizer(dir / "m", tokenizer, json{{"eos_token", "<|x|>"}});
  const auto tok = load_tokenizer(dir / "m");
  ASSERT_TRUE(tok->special().prefix.empty());
  ASSERT_EQ(tok->encode("  "), std::vector<int32_t>{260});
  ChoiceEvalOptions o;
  o.model_dir = dir / "m";
  o.task_files = {write(dir.path(), "cloze.jsonl",
                        R"({"context": " ", "choices": ["", "the"], "gold": 0})"
                        "\n")};
  const std::vector<ChoiceTaskResult> results = evaluate_choice_tasks(o);
  ASSERT_EQ(results.size(), 1u);
  // log p("ĠĠ" | prefix) from the model's logits directly.
  const int32_t prefix = tok->special().bos_id.value_or(tok->special().eos_id.value_or(0));
  const ModelWeights weights = ModelWeights::open(dir / "m");
  const at::Tensor logits =
      StreamingModel(weights, {}).forward(at::full({1, 1}, int64_t{prefix}, at::kLong));
  const double expected = at::log_softmax(logits.to(at::kDouble), -1)[0][0][260].item<double>();
  EXPECT_NEAR(results[0].loglikelihoods[0][0], expected, 1e-5);
  EXPECT_TRUE(std::isfinite(results[0].loglikelihoods[0][1]));
}

TEST(MultipleChoice, MakeClozeIsSeededAndNeverOverwrites) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  const std::string script =
      test::shell_quote((fs::path(SARQC_SOURCE_DIR) / "scripts" / "make_cloze.sh").string());
  const std::string text = test::shell_quote(test::fixture_text("tinystories_val.txt").string());
  auto make = [&](const std::string& out, const std::string& extra) {
    return test::run_command(fmt::format("bash {} {} {} --items 30 {}", script, text,
                                         test::shell_quote((dir.path() / out).string()), extra));
  };
  ASSERT_EQ(make("a.jsonl", "").first, 0);
  ASSERT_EQ(make("b.jsonl", "").first, 0);
  ASSERT_EQ(make("c.jsonl", "--seed 1 --choices 3").first, 0);
  EXPECT_EQ(test::read_bytes(dir.path() / "a.jsonl"), test::read_bytes(dir.path() / "b.jsonl"));
  EXPECT_NE(test::read_bytes(dir.path() / "a.jsonl"), test::read_bytes(dir.path() / "c.jsonl"));
  const ChoiceTask a = read_choice_task(dir.path() / "a.jsonl"), c = read_choice_task(dir.path() / "c.jsonl");
  EXPECT_EQ(a.layout, "cloze");
  EXPECT_EQ(a.items.size(), 30u);
  for (const auto& item : c.items) EXPECT_EQ(item.requests.size(), 3u);
  const std::string before = test::read_bytes(dir.path() / "a.jsonl");
  const auto [status, out] = make("a.jsonl", "--seed 5");
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("not overwriting"), std::string::npos) << out;
  EXPECT_EQ(test::read_bytes(dir.path() / "a.jsonl"), before);
}

TEST(MultipleChoice, EvalTakesDataOrTaskNotBoth) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  const fs::path task = write(dir.path(), "piqa.jsonl", kPiqa);
  const std::string model = test::fixture_model("stories260K").string();
  test::RunResult r = test::run_sarqc({"eval", "--model", model, "--task", task.string(), "--data",
                                       test::fixture_text("tinystories_val.txt").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--data FILE (perplexity) or --task FILE"), std::string::npos) << r.err;
  r = test::run_sarqc({"eval", "--model", model, "--task", task.string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["tasks"][0]["items"], 2);
  EXPECT_EQ(j["tasks"][0]["layout"], "piqa");
}

}  // namespace
}  // namespace sarqc

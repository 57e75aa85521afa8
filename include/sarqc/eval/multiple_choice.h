#pragma once
// Zero-shot multiple-choice accuracy with lm-evaluation-harness's conventions
// (0.4.x): each choice is one (context, continuation) request scored by the sum
// of the continuation's token log-probabilities; acc takes the largest,
// acc_norm the largest per character of the choice (lm-eval's len()), acc_bytes
// per UTF-8 byte. Requests are tokenized as lm-eval's causal HF backend does:
// trailing spaces of the context move to the continuation; context_enc =
// encode(context) and continuation_enc = encode(context +
// continuation)[len(context_enc):], both with the tokenizer's specials (Llama:
// BOS); an empty context is the BOS (else EOS) token; the last
// max_position_embeddings + 1 tokens are kept.
//
// Task files are JSONL, one document per line, in the layouts the datasets ship
// (README, "Zero- shot accuracy"): PIQA {goal, sol1, sol2, label}, ARC
// {question, choices{text, label}, answerKey} (or AI2's {question{stem,
// choices[{text, label}]}, answerKey}), HellaSwag {ctx_a, ctx_b,
// activity_label, endings, label}, WinoGrande {sentence, option1, option2,
// answer}, and sarqc's own {context, choices, gold} (scripts/make_cloze.sh).
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "sarqc/model/compute.h"

namespace sarqc {

struct ChoiceRequest {
  std::string context, continuation;
};

struct ChoiceItem {
  std::vector<ChoiceRequest> requests;  // one per choice
  std::vector<std::string> choices;     // what acc_norm measures, one per choice
  int64_t gold = 0;
};

struct ChoiceTask {
  std::string file, layout;  // layout: piqa, arc, hellaswag, winogrande or cloze
  std::vector<ChoiceItem> items;
};

// Reads a task file; a bad line is a bad-input Error naming the file, the line
// and the field.
ChoiceTask read_choice_task(const std::filesystem::path& file);

struct ChoiceTaskResult {
  std::string file, layout;
  int64_t items = 0;
  double acc = 0, acc_norm = 0, acc_bytes = 0, acc_stderr = 0;
  // Per item, per choice: the continuation's log-likelihood and whether every
  // token was greedy.
  std::vector<std::vector<double>> loglikelihoods;
  std::vector<std::vector<bool>> greedy;
  std::vector<int64_t> gold;
};

struct ChoiceEvalOptions {
  std::filesystem::path model_dir;
  std::vector<std::filesystem::path> task_files;
  int64_t max_items = 0;  // 0: every item
  ComputeOptions compute;
};

std::vector<ChoiceTaskResult> evaluate_choice_tasks(const ChoiceEvalOptions& options);

// per_item: also every item's log-likelihoods, greedy flags and gold.
nlohmann::json to_json(const std::vector<ChoiceTaskResult>& results, bool per_item);
std::string to_text(const std::vector<ChoiceTaskResult>& results);

}  // namespace sarqc

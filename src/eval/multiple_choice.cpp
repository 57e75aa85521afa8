#include "sarqc/eval/multiple_choice.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/error.h"
#include "sarqc/util/file.h"
#include "sarqc/util/stopwatch.h"

namespace sarqc {
namespace {

using nlohmann::json;

// Tokens per forward chunk of requests (the layers are loaded once per chunk).
constexpr int64_t kChunkTokens = 16384;
constexpr int64_t kDefaultMaxLength = 2048;  // lm-eval's when the config names no length

std::string strip(const std::string& s) {
  const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  const auto b = std::find_if_not(s.begin(), s.end(), space);
  const auto e = std::find_if_not(s.rbegin(), s.rend(), space).base();
  return b < e ? std::string(b, e) : std::string();
}

// Python's str.capitalize() on ASCII: the first character upper, the rest
// lower.
std::string capitalize(std::string s) {
  for (size_t i = 0; i < s.size(); ++i)
    s[i] = static_cast<char>(i == 0 ? std::toupper(static_cast<unsigned char>(s[i]))
                                    : std::tolower(static_cast<unsigned char>(s[i])));
  return s;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// lm-eval's hellaswag preprocess: strip, " [title]" → ". ", drop "[...]"
// (shortest), "  " → " ".
std::string hellaswag_preprocess(std::string text) {
  text = strip(text);
  replace_all(text, " [title]", ". ");
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const size_t close = text[i] == '[' ? text.find(']', i + 1) : std::string::npos;
    if (close != std::string::npos) {
      i = close;
      continue;
    }
    out += text[i];
  }
  // Python's str.replace is one left-to-right pass of non-overlapping matches.
  std::string once;
  for (size_t i = 0; i < out.size(); ++i) {
    once += out[i];
    if (out[i] == ' ' && i + 1 < out.size() && out[i + 1] == ' ') ++i;
  }
  return once;
}

// Code points of UTF-8 text (Python's len()).
int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

int64_t gold_index(const json& v, int64_t choices, const std::string& field) {
  int64_t g = -1;
  if (v.is_number_integer()) {
    g = v.get<int64_t>();
  } else if (v.is_string()) {
    const std::string text = v.get<std::string>();
    if (!text.empty() && text.size() < 10 &&
        std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
      g = std::stoll(text);
  }
  if (g < 0 || g >= choices)
    throw std::runtime_error(
        fmt::format("'{}' must be a choice index in [0, {}), got {}", field, choices, v.dump()));
  return g;
}

// One document in one of the known layouts; throws std::runtime_error naming
// the field.
ChoiceItem parse_item(const json& d, std::string& layout) {
  ChoiceItem item;
  auto text = [&](const json& o, const char* key) {
    if (!o.contains(key) || !o.at(key).is_string())
      throw std::runtime_error(fmt::format("'{}' must be a string", key));
    return o.at(key).get<std::string>();
  };
  auto add_choices = [&](const std::string& context, const std::vector<std::string>& choices) {
    for (const auto& c : choices) item.requests.push_back({context, " " + c});
    item.choices = choices;
  };
  if (d.contains("goal")) {
    layout = "piqa";
    add_choices("Question: " + text(d, "goal") + "\nAnswer:", {text(d, "sol1"), text(d, "sol2")});
    item.gold = gold_index(d.value("label", json()), 2, "label");
  } else if (d.contains("ctx_a")) {
    layout = "hellaswag";
    if (!d.contains("endings") || !d.at("endings").is_array())
      throw std::runtime_error("'endings' must be an array of strings");
    std::vector<std::string> endings;
    for (const auto& e : d.at("endings")) {
      if (!e.is_string()) throw std::runtime_error("'endings' must be an array of strings");
      endings.push_back(hellaswag_preprocess(e.get<std::string>()));
    }
    const std::string ctx = text(d, "ctx_a") + " " + capitalize(text(d, "ctx_b"));
    add_choices(hellaswag_preprocess(text(d, "activity_label") + ": " + ctx), endings);
    item.gold = gold_index(d.value("label", json()), static_cast<int64_t>(endings.size()), "label");
  } else if (d.contains("sentence") && d.contains("option1")) {
    layout = "winogrande";
    const std::string sentence = text(d, "sentence");
    const size_t blank = sentence.find('_');
    if (blank == std::string::npos) throw std::runtime_error("'sentence' has no '_' blank");
    const std::string target = " " + strip(sentence.substr(blank + 1));
    for (const char* key : {"option1", "option2"}) {
      item.choices.push_back(sentence.substr(0, blank) + text(d, key));
      item.requests.push_back({item.choices.back(), target});
    }
    const json& answer = d.value("answer", json());
    if (!answer.is_string() || (answer != "1" && answer != "2"))
      throw std::runtime_error(
          fmt::format("'answer' must be \"1\" or \"2\", got {}", answer.dump()));
    item.gold = answer == "1" ? 0 : 1;
  } else if (d.contains("question") && d.contains("answerKey")) {
    layout = "arc";
    // The HF dataset's {question, choices{text, label}} or AI2's
    // {question{stem, choices[]}}.
    const bool ai2 = d.at("question").is_object();
    const json& q = ai2 ? d.at("question") : d;
    const std::string stem = ai2 ? text(q, "stem") : text(d, "question");
    std::vector<std::string> texts, labels;
    const json& choices = q.value("choices", json());
    if (ai2 && choices.is_array()) {
      for (const auto& c : choices)
        texts.push_back(text(c, "text")), labels.push_back(text(c, "label"));
    } else if (!ai2 && choices.is_object() && choices.value("text", json()).is_array() &&
               choices.value("label", json()).is_array()) {
      for (const auto& t : choices.at("text")) texts.push_back(t.get<std::string>());
      for (const auto& l : choices.at("label")) labels.push_back(l.get<std::string>());
    }
    if (texts.empty() || texts.size() != labels.size())
      throw std::runtime_error("'choices' must hold as many texts as labels");
    add_choices("Question: " + stem + "\nAnswer:", texts);
    const auto it = std::find(labels.begin(), labels.end(), text(d, "answerKey"));
    if (it == labels.end())
      throw std::runtime_error(
          fmt::format("'answerKey' {} is not among the labels", d.at("answerKey").dump()));
    item.gold = it - labels.begin();
  } else if (d.contains("context") && d.contains("choices")) {
    layout = "cloze";
    if (!d.at("choices").is_array() || d.at("choices").empty())
      throw std::runtime_error("'choices' must be a non-empty array of strings");
    std::vector<std::string> choices;
    for (const auto& c : d.at("choices")) {
      if (!c.is_string())
        throw std::runtime_error("'choices' must be a non-empty array of strings");
      choices.push_back(c.get<std::string>());
    }
    add_choices(text(d, "context"), choices);
    item.gold = gold_index(d.value("gold", json()), static_cast<int64_t>(choices.size()), "gold");
  } else {
    throw std::runtime_error(
        "unknown layout: expected the fields of PIQA "
        "(goal, sol1, sol2, label), ARC (question, "
        "choices, answerKey), HellaSwag (ctx_a, ctx_b, "
        "activity_label, endings, label), "
        "WinoGrande (sentence, option1, option2, answer) "
        "or cloze (context, choices, gold)");
  }
  if (item.requests.size() < 2) throw std::runtime_error("an item needs at least two choices");
  return item;
}

struct Encoded {
  std::vector<int32_t> context, continuation;
};

// lm-eval's TemplateLM.loglikelihood tokenization (see the header).
// lm-eval's prefix token: what an empty context is scored from.
int32_t prefix_token(const Tokenizer& tok) {
  const SpecialTokens& sp = tok.special();
  return sp.bos_id ? *sp.bos_id : sp.eos_id.value_or(0);
}

Encoded encode_request(const Tokenizer& tok, const ChoiceRequest& r) {
  Encoded e;
  if (r.context.empty()) {
    e.continuation = tok.encode(r.continuation);
    const int32_t prefix = prefix_token(tok);
    e.context = {prefix};
    // A continuation that already starts with the prefix token gives it up to the context.
    if (!e.continuation.empty() && e.continuation.front() == prefix)
      e.continuation.erase(e.continuation.begin());
    return e;
  }
  std::string context = r.context, continuation = r.continuation;
  const size_t kept = context.find_last_not_of(" \t\n\r\f\v");
  const size_t cut = kept == std::string::npos ? 0 : kept + 1;
  continuation = context.substr(cut) + continuation;
  context.resize(cut);
  e.context = tok.encode_with_specials(context);
  std::vector<int32_t> whole = tok.encode_with_specials(context + continuation);
  const size_t n = std::min(e.context.size(), whole.size());
  e.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(n), whole.end());
  // A whitespace context without a BOS template tokenizes to nothing: no token would predict
  // the continuation's first one (it scored 0, the best log-likelihood, or divided by zero).
  if (e.context.empty()) e.context = {prefix_token(tok)};
  return e;
}

}  // namespace

ChoiceTask read_choice_task(const std::filesystem::path& file) {
  std::istringstream in(read_text_file(file));  // names a directory or an unreadable file
  ChoiceTask task;
  task.file = file.string();
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (strip(line).empty()) continue;
    std::string layout;
    try {
      task.items.push_back(parse_item(json::parse(line), layout));
    } catch (const std::exception& e) {
      throw_bad_input(fmt::format("{}:{}: {}", file.string(), number, e.what()));
    }
    if (!task.layout.empty() && layout != task.layout)
      throw_bad_input(
          fmt::format("{}:{}: a {} item in a {} file", file.string(), number, layout, task.layout));
    task.layout = layout;
  }
  if (task.items.empty())
    throw_bad_input(fmt::format("{}: no items (the file is empty or blank), expected one JSON "
                                "object per line",
                                file.string()));
  return task;
}

std::vector<ChoiceTaskResult> evaluate_choice_tasks(const ChoiceEvalOptions& o) {
  check_dtype_supported(o.compute.device, o.compute.dtype);
  std::vector<ChoiceTask> tasks;
  for (const auto& f : o.task_files) tasks.push_back(read_choice_task(f));  // all before any work
  const ModelWeights weights = ModelWeights::open(o.model_dir);
  const ModelConfig& cfg = weights.config();
  const auto tokenizer = load_tokenizer(o.model_dir);
  const int64_t max_length =
      cfg.max_position_embeddings > 0 ? cfg.max_position_embeddings : kDefaultMaxLength;
  const StreamingModel model(weights, o.compute);
  std::vector<ChoiceTaskResult> results;
  for (ChoiceTask& task : tasks) {
    if (o.max_items > 0 && static_cast<int64_t>(task.items.size()) > o.max_items)
      task.items.resize(static_cast<size_t>(o.max_items));
    const Stopwatch clock;
    // Every request of the task: its input ids and how many of its last tokens
    // are scored.
    struct Prepared {
      std::vector<int32_t> input,
          targets;  // input[t] predicts targets' position t - offset
      size_t item = 0, choice = 0;
    };
    std::vector<Prepared> requests;
    for (size_t i = 0; i < task.items.size(); ++i)
      for (size_t c = 0; c < task.items[i].requests.size(); ++c) {
        Encoded e = encode_request(*tokenizer, task.items[i].requests[c]);
        if (e.continuation.empty())
          throw_bad_input(
              fmt::format("{}: item {} choice {} has an empty continuation after "
                          "tokenization",
                          task.file, i + 1, c + 1));
        std::vector<int32_t> all = e.context;
        all.insert(all.end(), e.continuation.begin(), e.continuation.end());
        if (static_cast<int64_t>(all.size()) > max_length + 1)
          all.erase(all.begin(), all.end() - (max_length + 1));
        for (int32_t id : all)
          if (id < 0 || id >= cfg.vocab_size)
            throw_bad_input(fmt::format("{}: token id {} is outside vocab_size {}",
                                        tokenizer->source().string(), id, cfg.vocab_size));
        Prepared p;
        p.input.assign(all.begin(), all.end() - 1);
        p.targets = e.continuation;
        if (p.targets.size() > p.input.size())  // truncated into the continuation
          p.targets.erase(p.targets.begin(),
                          p.targets.end() - static_cast<std::ptrdiff_t>(p.input.size()));
        p.item = i;
        p.choice = c;
        requests.push_back(std::move(p));
      }
    // Longest first, in chunks of similar length (right padding: causal
    // attention keeps the real positions unaffected).
    std::vector<size_t> order(requests.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return requests[a].input.size() > requests[b].input.size();
    });
    ChoiceTaskResult r;
    r.file = task.file;
    r.layout = task.layout;
    r.items = static_cast<int64_t>(task.items.size());
    r.loglikelihoods.resize(task.items.size());
    r.greedy.resize(task.items.size());
    for (size_t i = 0; i < task.items.size(); ++i) {
      r.loglikelihoods[i].assign(task.items[i].requests.size(), 0.0);
      r.greedy[i].assign(task.items[i].requests.size(), false);
      r.gold.push_back(task.items[i].gold);
    }
    for (size_t begin = 0; begin < order.size();) {
      const int64_t width = static_cast<int64_t>(requests[order[begin]].input.size());
      const size_t count = static_cast<size_t>(std::max<int64_t>(1, kChunkTokens / width));
      const size_t end = std::min(order.size(), begin + count);
      at::Tensor ids = at::zeros({static_cast<int64_t>(end - begin), width}, at::kLong);
      for (size_t k = begin; k < end; ++k) {
        const auto& in = requests[order[k]].input;
        ids[static_cast<int64_t>(k - begin)]
            .narrow(0, 0, static_cast<int64_t>(in.size()))
            .copy_(at::tensor(at::ArrayRef<int32_t>(in)).to(at::kLong));
      }
      HiddenBatches hidden = model.embed(ids);
      model.run_layers(hidden);
      int64_t row = 0;
      for (const at::Tensor& batch : hidden.batches)
        for (int64_t s = 0; s < batch.size(0); ++s, ++row) {
          const Prepared& p = requests[order[begin + static_cast<size_t>(row)]];
          const int64_t n = static_cast<int64_t>(p.targets.size());
          const int64_t last = static_cast<int64_t>(p.input.size());
          const at::Tensor logp =
              at::log_softmax(model.logits(batch[s].narrow(0, last - n, n)), -1).to(at::kDouble);
          const at::Tensor target =
              at::tensor(at::ArrayRef<int32_t>(p.targets)).to(at::kLong).to(logp.device());
          r.loglikelihoods[p.item][p.choice] =
              logp.gather(1, target.unsqueeze(1)).sum().item<double>();
          r.greedy[p.item][p.choice] = (logp.argmax(-1) == target).all().item<bool>();
        }
      begin = end;
    }
    double acc = 0, acc_norm = 0, acc_bytes = 0;
    for (size_t i = 0; i < task.items.size(); ++i) {
      const auto& ll = r.loglikelihoods[i];
      const auto& choices = task.items[i].choices;
      size_t best = 0, best_norm = 0, best_bytes = 0;
      for (size_t c = 1; c < ll.size(); ++c) {  // numpy's argmax: the first of equals
        if (ll[c] > ll[best]) best = c;
        if (ll[c] / static_cast<double>(code_points(choices[c])) >
            ll[best_norm] / static_cast<double>(code_points(choices[best_norm])))
          best_norm = c;
        if (ll[c] / static_cast<double>(choices[c].size()) >
            ll[best_bytes] / static_cast<double>(choices[best_bytes].size()))
          best_bytes = c;
      }
      const auto gold = static_cast<size_t>(task.items[i].gold);
      acc += best == gold, acc_norm += best_norm == gold, acc_bytes += best_bytes == gold;
    }
    const double n = static_cast<double>(task.items.size());
    r.acc = acc / n;
    r.acc_norm = acc_norm / n;
    r.acc_bytes = acc_bytes / n;
    // lm-eval's stderr of a mean: the sample standard deviation over √n.
    r.acc_stderr = n > 1 ? std::sqrt(r.acc * (1 - r.acc) * n / (n - 1) / n) : 0.0;
    spdlog::info("{} ({}): {} items, acc {:.4f}, acc_norm {:.4f} in {:.1f} s", task.file,
                 task.layout, r.items, r.acc, r.acc_norm, clock.seconds());
    results.push_back(std::move(r));
  }
  return results;
}

nlohmann::json to_json(const std::vector<ChoiceTaskResult>& results, bool per_item) {
  json tasks = json::array();
  for (const auto& r : results) {
    json t = {{"file", r.file},
              {"layout", r.layout},
              {"items", r.items},
              {"acc", r.acc},
              {"acc_norm", r.acc_norm},
              {"acc_bytes", r.acc_bytes},
              {"acc_stderr", r.acc_stderr}};
    if (per_item) {
      json items = json::array();
      for (size_t i = 0; i < r.loglikelihoods.size(); ++i)
        items.push_back({{"loglikelihoods", r.loglikelihoods[i]},
                         {"greedy", r.greedy[i]},
                         {"gold", r.gold[i]}});
      t["per_item"] = items;
    }
    tasks.push_back(t);
  }
  return {{"tasks", tasks}};
}

std::string to_text(const std::vector<ChoiceTaskResult>& results) {
  std::string out = fmt::format("{:<40} {:>10} {:>7} {:>8} {:>9}\n", "task", "layout", "items",
                                "acc", "acc_norm");
  for (const auto& r : results)
    out += fmt::format("{:<40} {:>10} {:>7} {:>8.4f} {:>9.4f}  (± {:.4f})\n", r.file, r.layout,
                       r.items, r.acc, r.acc_norm, r.acc_stderr);
  return out;
}

}  // namespace sarqc

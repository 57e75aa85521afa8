// The catalogue of hostile inputs: each row runs the real binary and expects the README's exit
// code, one "sarqc: error:" line containing a fragment, and that nothing of the user's was lost
// and nothing half-written was left. Rows come from review findings; add one for every new case.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "cli/run_sarqc.h"
#include "sarqc/io/checkpoint.h"
#include "sarqc/io/safetensors_writer.h"
#include "sarqc/model/compute.h"
#include "sarqc/util/error.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;

// A copy of a fixture model with `change` applied to one tensor (others copied as stored).
fs::path model_with(const fs::path& dst, const std::string& tensor,
                    const std::function<void(at::Tensor&)>& change,
                    const std::string& fixture = "stories260K") {
  const fs::path src = test::fixture_model(fixture);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src))
    if (e.path().extension() != ".safetensors")
      fs::copy_file(e.path(), dst / e.path().filename(), fs::copy_options::overwrite_existing);
  const Checkpoint ckpt = Checkpoint::open(src);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : ckpt.tensor_names()) {
    at::Tensor t = ckpt.load(name).clone();
    if (name == tensor) change(t);
    tensors.emplace_back(name, t);
  }
  save_safetensors(dst / "model.safetensors", tensors);
  return dst;
}

// A copy of a fixture model whose config.json has `field` set to `value`.
fs::path model_with_config(const fs::path& dst, const std::string& field,
                           const nlohmann::json& value) {
  const fs::path src = test::fixture_model("stories260K");
  fs::copy(src, dst, fs::copy_options::recursive);
  nlohmann::json config = nlohmann::json::parse(test::read_bytes(dst / "config.json"));
  config[field] = value;
  test::write_bytes(dst / "config.json", config.dump());
  return dst;
}

std::string raw_int32(const std::vector<int32_t>& ids) {
  return std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * sizeof(int32_t));
}

struct Row {
  std::string name;
  std::function<std::vector<std::string>(const fs::path& dir)> args;  // dir: the row's folder
  int exit_code;
  std::string fragment;  // in the one error line ("" when the run must succeed)
  int signal = 0;        // sent once the run's temporary output folder exists
  std::function<void(const fs::path& dir)> check{};  // what must hold afterwards
};

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> found;
  for (const auto& e : fs::directory_iterator(dir)) found.insert(e.path().filename().string());
  return found;
}

// Nothing but `expected` in `dir` (no temporary folders, no created parents).
void expect_only(const fs::path& dir, const std::set<std::string>& expected) {
  EXPECT_EQ(entries(dir), expected) << dir;
}

TEST(BadInputCatalogue, EveryHostileInputGetsItsExitCodeAndOneLine) {
  SARQC_REQUIRE_FIXTURES();
  const std::string stories = test::fixture_model("stories260K").string();
  const std::string text = test::fixture_text("tinystories_train.txt").string();
  const std::vector<std::string> rtn = {"--method", "rtn", "--bits", "8", "--group-size", "-1"};
  auto quantize = [&](const std::string& model, const fs::path& out,
                      std::vector<std::string> more = {}) {
    std::vector<std::string> a = {"quantize", "--model", model, "--out", out.string()};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  };
  auto plus = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  auto model_survives = [](const fs::path& m) {
    EXPECT_TRUE(fs::exists(m / "model.safetensors")) << m;
    EXPECT_TRUE(fs::exists(m / "config.json")) << m;
  };
  std::vector<Row> rows = {
      // --out against the input: the source model must never be replaced or deleted.
      {"out is the model, --force",
       [&](const fs::path& d) {
         fs::copy(stories, d / "m", fs::copy_options::recursive);
         return quantize((d / "m").string(), d / "m", plus(rtn, {"--force"}));
       },
       kExitUsage, "may not be, contain or lie inside the input",
       0, [&](const fs::path& d) { model_survives(d / "m"); }},
      {"out contains the model, --force",
       [&](const fs::path& d) {
         fs::copy(stories, d / "m", fs::copy_options::recursive);
         return quantize((d / "m").string(), d, plus(rtn, {"--force"}));
       },
       kExitUsage, "may not be, contain or lie inside the input",
       0, [&](const fs::path& d) { model_survives(d / "m"); }},
      {"out inside the model",
       [&](const fs::path& d) {
         fs::copy(stories, d / "m", fs::copy_options::recursive);
         return quantize((d / "m").string(), d / "m" / "q", rtn);
       },
       kExitUsage, "may not be, contain or lie inside the input",
       0, [&](const fs::path& d) { expect_only(d / "m", entries(stories)); }},
      {"out contains the calibration text",
       [&](const fs::path& d) {
         fs::create_directories(d / "q");
         fs::copy_file(text, d / "q" / "calib.txt");
         return quantize(stories, d / "q", {"--calib", (d / "q" / "calib.txt").string(),
                                            "--force"});
       },
       kExitUsage, "may not be, contain or lie inside the input",
       0, [&](const fs::path& d) { EXPECT_TRUE(fs::exists(d / "q" / "calib.txt")); }},
      // --out forms.
      {"out with a trailing slash",
       [&](const fs::path& d) { return quantize(stories, (d / "q").string() + "/", rtn); },
       0, "", 0,
       [&](const fs::path& d) {
         EXPECT_TRUE(fs::exists(d / "q" / "model.safetensors"));
         expect_only(d, {"q"});
       }},
      {"out empty", [&](const fs::path&) { return quantize(stories, "", rtn); }, kExitUsage,
       "--out: expected a folder path"},
      {"out is .", [&](const fs::path&) { return quantize(stories, ".", rtn); }, kExitUsage,
       "must name a folder to create"},
      {"out is a dangling symbolic link",
       [&](const fs::path& d) {
         fs::create_symlink(d / "nowhere", d / "link");
         return quantize(stories, d / "link", rtn);
       },
       kExitUsage, "is a dangling symbolic link",
       0, [&](const fs::path& d) { expect_only(d, {"link"}); }},
      {"out is a file",
       [&](const fs::path& d) {
         test::write_bytes(d / "f", "mine");
         return quantize(stories, d / "f", plus(rtn, {"--force"}));
       },
       kExitUsage, "exists and is not a folder",
       0, [&](const fs::path& d) { EXPECT_EQ(test::read_bytes(d / "f"), "mine"); }},
      {"out below a file",
       [&](const fs::path& d) {
         test::write_bytes(d / "f", "mine");
         return quantize(stories, d / "f" / "q", rtn);
       },
       kExitUsage, "is not a folder"},
      {"out's new parents are removed after a failure",
       [&](const fs::path& d) {
         return quantize(stories, d / "a" / "b" / "c", {"--calib", (d / "missing.txt").string()});
       },
       kExitBadInput, "missing.txt", 0, [&](const fs::path& d) { expect_only(d, {}); }},
      {"out exists without --force",
       [&](const fs::path& d) {
         fs::create_directories(d / "q");
         test::write_bytes(d / "q" / "keep", "mine");
         return quantize(stories, d / "q", rtn);
       },
       kExitUsage, "pass --force",
       0, [&](const fs::path& d) { EXPECT_EQ(test::read_bytes(d / "q" / "keep"), "mine"); }},
      {"leftover of a killed run is cleaned up",
       [&](const fs::path& d) {
         const pid_t child = ::fork();  // a process id that is surely gone
         if (child == 0) ::_exit(0);
         ::waitpid(child, nullptr, 0);
         fs::create_directories(d / (".q.partial-" + std::to_string(child)));
         test::write_bytes(d / (".q.partial-" + std::to_string(child)) / "x", "half");
         return quantize(stories, d / "q", rtn);
       },
       0, "", 0, [&](const fs::path& d) { expect_only(d, {"q"}); }},
      // Weights the format cannot hold, or that are not numbers.
      {"NaN in a weight that gets quantized",
       [&](const fs::path& d) {
         model_with(d / "m", "model.layers.1.self_attn.q_proj.weight",
                    [](at::Tensor& t) { t[3][5] = std::nan(""); });
         return quantize((d / "m").string(), d / "q", rtn);
       },
       kExitBadInput, "model.layers.1.self_attn.q_proj.weight' holds nan at [3, 5]",
       0, [&](const fs::path& d) { expect_only(d, {"m"}); }},
      {"+Inf in a weight that gets quantized",
       [&](const fs::path& d) {
         model_with(d / "m", "model.layers.0.mlp.down_proj.weight",
                    [](at::Tensor& t) { t[0][7] = INFINITY; });
         return quantize((d / "m").string(), d / "q", rtn);
       },
       kExitBadInput, "model.layers.0.mlp.down_proj.weight' holds inf at [0, 7]"},
      {"finite weight beyond the fp16 scale range",
       [&](const fs::path& d) {
         model_with(d / "m", "model.layers.2.self_attn.o_proj.weight",
                    [](at::Tensor& t) { t[1][2] = -6e5; });
         return quantize((d / "m").string(), d / "q",
                         {"--method", "rtn", "--bits", "4", "--group-size", "64"});
       },
       kExitBadInput, "model.layers.2.self_attn.o_proj.weight' holds |w| = 600000 at [1, 2]"},
      {"NaN in a tensor that is copied",
       [&](const fs::path& d) {
         model_with(d / "m", "model.embed_tokens.weight",
                    [](at::Tensor& t) { t[9][1] = std::nan(""); });
         return quantize((d / "m").string(), d / "q", rtn);
       },
       kExitBadInput, "'model.embed_tokens.weight' holds nan at [9, 1]"},
      {"eval of a model with NaN weights",
       [&](const fs::path& d) {
         model_with(d / "m", "model.embed_tokens.weight",
                    [](at::Tensor& t) { t.select(1, 1).fill_(std::nan("")); });
         return std::vector<std::string>{"eval", "--model", (d / "m").string(), "--data",
                                         test::fixture_text("tinystories_val.txt").string(),
                                         "--max-windows", "1", "--seqlen", "64"};
       },
       kExitBadInput, "log-likelihood is not a number"},
      {"activations that overflow fp32",
       [&](const fs::path& d) {
         model_with(d / "m", "model.layers.1.input_layernorm.weight",
                    [](at::Tensor& t) { t.fill_(3e38); });
         return quantize((d / "m").string(), d / "q",
                         {"--calib", text, "--nsamples", "2", "--seqlen", "32"});
       },
       kExitRuntime, "not finite even in fp32"},
      // Calibration data.
      {"calibration token id beyond the vocabulary (JSON)",
       [&](const fs::path& d) {
         std::string ids = "[";
         for (int i = 0; i < 400; ++i) ids += std::to_string(i % 500) + ",";
         test::write_bytes(d / "ids.json", ids + "512]");
         return quantize(stories, d / "q", {"--calib-tokens", (d / "ids.json").string(),
                                            "--nsamples", "1", "--seqlen", "8"});
       },
       kExitBadInput, "token id 512 at position 400 is outside the model's vocab_size 512"},
      {"calibration token id beyond the vocabulary (raw int32)",
       [&](const fs::path& d) {
         std::vector<int32_t> ids(400, 7);
         ids[17] = 100000;
         test::write_bytes(d / "ids.bin", raw_int32(ids));
         return quantize(stories, d / "q", {"--calib-tokens", (d / "ids.bin").string(),
                                            "--nsamples", "1", "--seqlen", "8"});
       },
       kExitBadInput, "token id 100000 at position 17"},
      {"calibration file is a directory",
       [&](const fs::path& d) {
         fs::create_directories(d / "texts");
         return quantize(stories, d / "q", {"--calib", (d / "texts").string()});
       },
       kExitBadInput, "is a directory"},
      {"calibration token file is a directory",
       [&](const fs::path& d) {
         fs::create_directories(d / "ids");
         return quantize(stories, d / "q", {"--calib-tokens", (d / "ids").string()});
       },
       kExitBadInput, "is a directory"},
      {"calibration text shorter than one window",
       [&](const fs::path& d) {
         test::write_bytes(d / "short.txt", "Once upon a time.");
         return quantize(stories, d / "q", {"--calib", (d / "short.txt").string()});
       },
       kExitBadInput, "tokens found, but one calibration window"},
      {"missing calibration file",
       [&](const fs::path& d) {
         return quantize(stories, d / "q", {"--calib", (d / "nope.txt").string()});
       },
       kExitBadInput, "nope.txt: cannot open"},
      // Flags.
      {"negative seed", [&](const fs::path& d) { return quantize(stories, d / "q", plus(rtn, {"--seed", "-1"})); },
       kExitUsage, "--seed"},
      {"negative seed in a recipe",
       [&](const fs::path& d) {
         test::write_bytes(d / "r.json", R"({"seed": -1})");
         return quantize(stories, d / "q", plus(rtn, {"--config", (d / "r.json").string()}));
       },
       kExitUsage, "seed"},
      {"recipe is a directory",
       [&](const fs::path& d) {
         fs::create_directories(d / "recipes");
         return quantize(stories, d / "q", plus(rtn, {"--config", (d / "recipes").string()}));
       },
       kExitBadInput, "is a directory"},
      {"bits outside 2/3/4/8", [&](const fs::path& d) { return quantize(stories, d / "q", {"--bits", "5"}); },
       kExitUsage, "--bits"},
      {"unknown method", [&](const fs::path& d) { return quantize(stories, d / "q", {"--method", "best"}); },
       kExitUsage, "--method"},
      {"unknown flag", [&](const fs::path& d) { return quantize(stories, d / "q", {"--bogus"}); },
       kExitUsage, "--bogus"},
      {"no calibration for gptq", [&](const fs::path& d) { return quantize(stories, d / "q"); },
       kExitUsage, "needs calibration data"},
      {"cuda without a GPU", [&](const fs::path& d) { return quantize(stories, d / "q", plus(rtn, {"--device", "cuda"})); },
       kExitUsage, "CUDA"},
      // Values refused where they enter (issue 27's list; each ran or misled before).
      {"lambda inf", [&](const fs::path& d) { return quantize(stories, d / "q", {"--method", "sarqc", "--calib", text, "--lambda", "inf"}); },
       kExitUsage, "--lambda 'inf': expected auto, lw or a number from 0 to 1e6"},
      {"lambda 1e308", [&](const fs::path& d) { return quantize(stories, d / "q", {"--method", "sarqc", "--calib", text, "--lambda", "1e308"}); },
       kExitUsage, "--lambda '1e308'"},
      {"damp inf", [&](const fs::path& d) { return quantize(stories, d / "q", {"--calib", text, "--damp", "inf"}); },
       kExitUsage, "--damp 'inf': expected a number from 0 to 1e6"},
      {"lambda 1e-320 is a number >= 0",
       [&](const fs::path& d) {
         return quantize(stories, d / "q", {"--method", "sarqc", "--calib", text, "--lambda",
                                            "1e-320", "--nsamples", "2", "--seqlen", "32"});
       },
       0, "", 0, [&](const fs::path& d) { EXPECT_TRUE(fs::exists(d / "q" / "model.safetensors")); }},
      {"threads 100000", [&](const fs::path& d) { return quantize(stories, d / "q", plus(rtn, {"--threads", "100000"})); },
       kExitUsage, "--threads 100000: expected 0 (one per usable core) to"},
      {"group size that divides no input",
       [&](const fs::path& d) { return quantize(stories, d / "q", {"--method", "rtn", "--group-size", "7"}); },
       kExitUsage, "--group-size 7: no module could be quantized, the input widths 64, 172",
       0, [&](const fs::path& d) { expect_only(d, {}); }},
      {"nsamples 2^40",
       [&](const fs::path& d) {
         return quantize(stories, d / "q", {"--calib", text, "--nsamples", "1099511627776"});
       },
       kExitUsage, "--nsamples 1099511627776 x --seqlen 512", 0,
       [&](const fs::path& d) { expect_only(d, {}); }},
      {"misspelt subcommand",
       [&](const fs::path&) { return std::vector<std::string>{"quantze", "--model", stories}; },
       kExitUsage, "'quantze' is not a subcommand: expected one of quantize, eval"},
      {"nproc beyond 4 per core",
       [&](const fs::path& d) { return quantize(stories, d / "q", plus(rtn, {"--nproc", "65536"})); },
       kExitUsage, "--nproc '65536': expected an integer from 1 to",
       0, [&](const fs::path& d) { expect_only(d, {}); }},
      {"nproc not an integer",
       [&](const fs::path& d) { return quantize(stories, d / "q", plus(rtn, {"--nproc", "two"})); },
       kExitUsage, "--nproc 'two'"},
      {"an empty calibration window",
       [&](const fs::path& d) {
         test::write_bytes(d / "w.json", "[[]]");
         return quantize(stories, d / "q", {"--calib-tokens", (d / "w.json").string()});
       },
       kExitBadInput, "window 0 is empty, expected at least one token id"},
      {"calibration windows of different lengths",
       [&](const fs::path& d) {
         test::write_bytes(d / "w.json", "[[1, 2, 3], [4, 5]]");
         return quantize(stories, d / "q", {"--calib-tokens", (d / "w.json").string()});
       },
       kExitBadInput, "window 1 has 2 token ids and window 0 has 3"},
      {"a JSON object as calibration tokens (16 bytes, a multiple of 4)",
       [&](const fs::path& d) {
         test::write_bytes(d / "o.json", R"({"ids": [1, 2]})");
         return quantize(stories, d / "q", {"--calib-tokens", (d / "o.json").string()});
       },
       kExitBadInput, "o.json: a JSON object, expected a JSON array of token ids"},
      {"calibration windows longer than max_position_embeddings",
       [&](const fs::path& d) {
         std::string w = "[";
         for (int i = 0; i < 600; ++i) w += (i ? "," : "") + std::to_string(5 + i % 100);
         test::write_bytes(d / "w.json", "[" + w + "]]");
         return quantize(stories, d / "q", {"--calib-tokens", (d / "w.json").string()});
       },
       kExitBadInput, "windows of 600 tokens, but the model has max_position_embeddings 512",
       0, [&](const fs::path& d) { expect_only(d, {"w.json"}); }},
      {"eval --task on a directory",
       [&](const fs::path& d) {
         fs::create_directories(d / "tasks");
         return std::vector<std::string>{"eval", "--model", stories, "--task",
                                         (d / "tasks").string()};
       },
       kExitBadInput, "tasks: is a directory, expected a file"},
      // Models.
      {"missing model folder",
       [&](const fs::path& d) { return quantize((d / "none").string(), d / "q", rtn); },
       kExitBadInput, "none: not a directory"},
      {"config with 2^40 layers",
       [&](const fs::path& d) {
         model_with_config(d / "m", "num_hidden_layers", int64_t{1} << 40);
         return std::vector<std::string>{"inspect", "--model", (d / "m").string()};
       },
       kExitBadInput, "num_hidden_layers is 1099511627776, but the checkpoint holds tensors of 5"},
      {"config with 10^6 layers",
       [&](const fs::path& d) {
         model_with_config(d / "m", "num_hidden_layers", 1000000);
         return quantize((d / "m").string(), d / "q", rtn);
       },
       kExitBadInput, "num_hidden_layers is 1000000"},
      {"config with 2^40 vocabulary entries",
       [&](const fs::path& d) {
         model_with_config(d / "m", "vocab_size", int64_t{1} << 40);
         return std::vector<std::string>{"inspect", "--model", (d / "m").string()};
       },
       kExitBadInput, "more than the checkpoint's"},
      {"config without hidden_size",
       [&](const fs::path& d) {
         model_with_config(d / "m", "hidden_size", nullptr);
         return std::vector<std::string>{"inspect", "--model", (d / "m").string()};
       },
       kExitBadInput, "hidden_size"},
      {"pickle checkpoint only",
       [&](const fs::path& d) {
         fs::create_directories(d / "m");
         fs::copy_file(fs::path(stories) / "config.json", d / "m" / "config.json");
         test::write_bytes(d / "m" / "pytorch_model.bin", "not a pickle");
         return std::vector<std::string>{"inspect", "--model", (d / "m").string()};
       },
       kExitBadInput, "m"},
      // Signals: stop at the next check point, remove the temporary folder, 128 + signal.
      {"SIGTERM during quantize",
       [&](const fs::path& d) {
         return quantize(test::fixture_model("babyllama-tok105").string(), d / "q",
                         {"--calib", text, "--nsamples", "64", "--seqlen", "256"});
       },
       128 + SIGTERM, "interrupted by SIGTERM; nothing was written", SIGTERM,
       [&](const fs::path& d) { expect_only(d, {}); }},
      {"SIGINT during quantize",
       [&](const fs::path& d) {
         return quantize(test::fixture_model("babyllama-tok105").string(), d / "q",
                         {"--calib", text, "--nsamples", "64", "--seqlen", "256"});
       },
       128 + SIGINT, "interrupted by SIGINT", SIGINT, [&](const fs::path& d) { expect_only(d, {}); }},
  };

  // libtorch 1.13 has no fp16 matmul on the CPU; PyTorch 2.x has.
  if (!dtype_supported(c10::Device(c10::kCPU), at::kHalf)) {
    rows.push_back({"fp16 on the CPU is refused before any work",
                    [&](const fs::path& d) {
                      // A missing calibration file would be found later: the dtype comes first.
                      return quantize(stories, d / "q",
                                      {"--dtype", "fp16", "--calib", (d / "nope.txt").string()});
                    },
                    kExitUsage, "--dtype", 0, [&](const fs::path& d) { expect_only(d, {}); }});
  }

  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    test::TempDir dir;
    const std::vector<std::string> args = row.args(dir.path());
    std::string joined;
    for (const auto& a : args) joined += " " + a;
    const test::RunResult r = row.signal ? test::run_sarqc_and_signal(args, dir.path(), row.signal)
                                         : test::run_sarqc(args);
    EXPECT_EQ(r.exit_code, row.exit_code) << "sarqc" << joined << "\n" << r.err;
    if (row.exit_code != 0) {
      // One error line, the last one on stderr (warnings may come before it).
      const std::string prefix = "sarqc: error: ";
      size_t errors = 0;
      for (size_t at = r.err.find(prefix); at != std::string::npos; at = r.err.find(prefix, at + 1))
        ++errors;
      EXPECT_EQ(errors, 1u) << r.err;
      const size_t last = r.err.rfind(prefix);
      ASSERT_NE(last, std::string::npos) << r.err;
      const std::string line = r.err.substr(last);
      EXPECT_EQ(test::count_lines(line), 1u) << line;
      EXPECT_NE(line.find(row.fragment), std::string::npos)
          << "expected '" << row.fragment << "' in: " << line;
      EXPECT_TRUE(r.out.empty()) << r.out;
    }
    if (row.check) row.check(dir.path());
  }
  std::printf("bad-input catalogue: %zu rows\n", rows.size());
}

}  // namespace
}  // namespace sarqc

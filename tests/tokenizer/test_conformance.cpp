// Byte-exact conformance of the tokenizer.json pipeline with the reference implementation, the
// Python `tokenizers` package from PyPI (the Rust library that transformers, vLLM and TGI use),
// on the real tokenizer.json files of ../shared/fixtures/tokenizers, layouts derived from them,
// every fixture text and our own hard cases. scripts/venv.sh installs the pinned reference into
// the project's .venv; when it cannot, the tests fail and say why (they never skip).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sarqc/io/tokenizer.h"
#include "sarqc/util/sha256.h"
#include "sarqc/util/utf8.h"
#include "python_reference.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kReferenceDir = fs::path(SARQC_SOURCE_DIR) / "tests" / "tokenizer_reference";
const fs::path kDataDir = fs::path(SARQC_SOURCE_DIR) / "tests" / "data";
const fs::path kRequirements = fs::path(SARQC_SOURCE_DIR) / "scripts" / "requirements-test.txt";

using test::shell_quote;

// Where the reference's outputs are cached: $SARQC_TOKENIZER_REFERENCE_DIR, or
// ~/.cache/sarqc/tokenizer-reference (outside the checkout, shared between checkouts).
fs::path reference_cache() {
  if (const char* env = std::getenv("SARQC_TOKENIZER_REFERENCE_DIR"); env && *env) return env;
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  const fs::path base = xdg && *xdg ? fs::path(xdg) : fs::path(home ? home : "/tmp") / ".cache";
  return base / "sarqc" / "tokenizer-reference";
}

// When decode(encode(x)) gives back x (valid UTF-8 x), as a property of the tokenizer itself:
enum class RoundTrip {
  Always,
  // A Prepend normalizer puts U+2581 in front of every section, also after an added token.
  WithoutAddedTokenText,
  // Metaspace "first" does not add U+2581 to a text that starts with a space, but the decoder
  // still strips one.
  WithoutLeadingSpace,
  // NFC: x comes back normalized, so the reference's decode of the same ids is the expectation.
  Normalized,
};

struct Case {
  const char* name;
  const char* tokenizer;  // folder of ../shared/fixtures/tokenizers, or "real:" + a real model
  const char* variant;    // "" or a rewrite of the file (see make_variant)
  RoundTrip round_trip;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// Layouts the fixture files do not have, written from the ones they do.
json make_variant(json j, const std::string& variant) {
  if (variant == "metaspace") {
    // Llama 2 / Mistral files written by newer converters: Metaspace instead of Prepend+Replace.
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Metaspace"},
                          {"replacement", "\xE2\x96\x81"},
                          {"prepend_scheme", "first"},
                          {"split", false}};
  } else if (variant == "lowercase_nfkc_digits") {
    // The other normalizers and pre-tokenizers, on a byte-level model that encodes any text.
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}};
    const json digits = {{"type", "Digits"}, {"individual_digits", true}};
    j["pre_tokenizer"]["pretokenizers"].insert(j["pre_tokenizer"]["pretokenizers"].begin(), digits);
  } else if (variant == "nfd_strip_accents") {
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "NFD"}},
                         {{"type", "StripAccents"}},
                         {{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                         {{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}}}}};
  } else if (variant == "split_behaviors") {
    // Split's merging behaviours (Gemma 3's file has MergedWithPrevious), ahead of the
    // byte-level split: runs of commas, a letter and digits as delimiters.
    json& steps = j["pre_tokenizer"]["pretokenizers"];
    steps.insert(steps.begin(),
                 json{{"type", "Split"}, {"pattern", {{"String", "e"}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}});
    steps.insert(steps.begin(),
                 json{{"type", "Split"}, {"pattern", {{"Regex", "[0-9]"}}}, {"behavior", "MergedWithNext"}, {"invert", false}});
    steps.insert(steps.begin(),
                 json{{"type", "Split"}, {"pattern", {{"String", ","}}}, {"behavior", "Contiguous"}, {"invert", false}});
    // invert: the behaviour applies to the pieces between the matches
    steps.insert(steps.begin(),
                 json{{"type", "Split"}, {"pattern", {{"Regex", "[A-Z]"}}}, {"behavior", "MergedWithPrevious"}, {"invert", true}});
  } else if (variant == "gpt2") {
    // GPT-2 style: no Split, ByteLevel with its own regex and a prefix space.
    j["pre_tokenizer"] = {{"type", "ByteLevel"},
                          {"add_prefix_space", false},
                          {"trim_offsets", true},
                          {"use_regex", true}};
  }
  return j;
}

std::vector<fs::path> text_files() {
  std::vector<fs::path> files;
  const fs::path fixtures = test::fixtures_dir() / "text";
  if (fs::is_directory(fixtures))
    for (const auto& entry : fs::directory_iterator(fixtures))
      if (entry.is_regular_file()) files.push_back(entry.path());
  for (const auto& entry : fs::directory_iterator(kDataDir))
    if (entry.path().filename().string().rfind("tokenizer_", 0) == 0) files.push_back(entry.path());
  // By name, so that the cache key does not depend on where the checkout and fixtures are.
  std::sort(files.begin(), files.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return files;
}

// The reference's output for `folder` on `files`, cached by a hash of everything it depends on.
json reference_output(const std::string& python, const fs::path& folder,
                      const std::vector<fs::path>& files) {
  Sha256 key;
  for (const fs::path& input : {folder / "tokenizer.json", kReferenceDir / "reference.py",
                                kRequirements})
    key.update(fs::exists(input) ? test::read_bytes(input) : std::string("-"));
  for (const fs::path& file : files) {
    key.update(file.filename().string());  // not the path: checkouts elsewhere share the cache
    key.update(test::read_bytes(file));
  }
  const fs::path results = reference_cache() / "results";
  fs::create_directories(results);
  const fs::path output = results / (key.hex_digest().substr(0, 24) + ".json");
  if (!fs::exists(output)) {
    const fs::path partial = output.string() + ".tmp." + std::to_string(::getpid());
    std::string command = fmt::format("{} {} {} {}", shell_quote(python),
                                      shell_quote((kReferenceDir / "reference.py").string()),
                                      shell_quote(fs::absolute(folder).string()),
                                      shell_quote(partial.string()));
    for (const fs::path& file : files) command += " " + shell_quote(file.string());
    const auto [status, out] = test::run_command(command);
    if (status != 0) throw std::runtime_error("the reference failed: " + out);
    fs::rename(partial, output);
  }
  return json::parse(test::read_bytes(output));
}

std::string ids_around(const std::vector<int32_t>& ids, size_t at) {
  std::string out = "[";
  for (size_t i = at > 3 ? at - 3 : 0; i < std::min(ids.size(), at + 4); ++i)
    out += (i == at ? ">" : "") + std::to_string(ids[i]) + " ";
  return out + "]";
}

std::string printable(std::string s) {
  std::string out;
  for (char c : s)
    out += c == '\n' ? std::string("\\n") : c == '\r' ? std::string("\\r") : std::string(1, c);
  return out;
}

// "" when equal; otherwise the first differing token with the text around it.
std::string compare_ids(const std::vector<int32_t>& expected, const std::vector<int32_t>& actual,
                        const Tokenizer& tokenizer) {
  if (expected == actual) return "";
  size_t at = 0;
  while (at < expected.size() && at < actual.size() && expected[at] == actual[at]) ++at;
  std::string context;
  try {
    const size_t from = at > 12 ? at - 12 : 0;
    const std::vector<int32_t> window(expected.begin() + from,
                                      expected.begin() + std::min(expected.size(), at + 12));
    context = printable(tokenizer.decode(window));
  } catch (const std::exception& e) {
    context = std::string("(cannot decode: ") + e.what() + ")";
  }
  return fmt::format(
      "first difference at token {} (reference has {} tokens, ours {}): reference "
      "{} ours {}; text around it: \"{}\"",
      at, expected.size(), actual.size(), ids_around(expected, at), ids_around(actual, at),
      context);
}

std::string compare_text(const std::string& expected, const std::string& actual) {
  if (expected == actual) return "";
  size_t at = 0;
  while (at < expected.size() && at < actual.size() && expected[at] == actual[at]) ++at;
  const size_t from = at > 40 ? at - 40 : 0;
  return fmt::format(
      "first difference at byte {} (expected {} bytes, got {}): expected \"{}\" got \"{}\"", at,
      expected.size(), actual.size(), printable(expected.substr(from, 80)),
      printable(actual.substr(from, 80)));
}

class Conformance : public ::testing::TestWithParam<Case> {};

TEST_P(Conformance, IdsDecodingAndSpecialsMatchTheReference) {
  const Case& c = GetParam();
  SARQC_REQUIRE_FIXTURES();
  const auto [python, why] = test::venv_python({"requirements-test.txt"});
  ASSERT_FALSE(python.empty()) << "the reference (Python tokenizers from PyPI, installed by "
                                  "scripts/venv.sh) is not available: "
                               << why;
  fs::path package = test::fixtures_dir() / "tokenizers" / c.tokenizer;
  if (std::string(c.tokenizer).rfind("real:", 0) == 0) {  // scripts/real_model.sh builds it
    SARQC_REAL_MODEL(model, std::string(c.tokenizer).substr(5));
    package = model;
  }
  ASSERT_TRUE(fs::exists(package / "tokenizer.json")) << package;
  test::TempDir dir;
  fs::path folder = package;
  if (*c.variant) {
    folder = dir.path();
    fs::copy_file(package / "tokenizer_config.json", folder / "tokenizer_config.json");
    const json variant =
        make_variant(json::parse(test::read_bytes(package / "tokenizer.json")), c.variant);
    test::write_bytes(folder / "tokenizer.json", variant.dump());
  }
  const std::vector<fs::path> files = text_files();
  const json reference = reference_output(python, folder, files);
  const auto tokenizer = load_tokenizer(folder);
  std::vector<std::string> added_tokens;
  const json tokenizer_json = json::parse(test::read_bytes(folder / "tokenizer.json"));
  for (const json& t : tokenizer_json.at("added_tokens"))
    added_tokens.push_back(t.at("content").get<std::string>());
  ASSERT_EQ(tokenizer->kind(), "tokenizer.json BPE");

  for (const fs::path& file : files) {
    SCOPED_TRACE(file.string());
    const std::string text = test::read_bytes(file);
    const json& r = reference.at(file.filename().string());
    const auto expected = r.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = tokenizer->encode(text);
    const std::string id_mismatch = compare_ids(expected, ids, *tokenizer);
    EXPECT_EQ(id_mismatch, "") << "encode";

    const std::string reference_text = r.at("decoded").get<std::string>();
    EXPECT_EQ(compare_text(reference_text, tokenizer->decode(expected)), "") << "decode";

    bool round_trips = is_valid_utf8(text);
    if (c.round_trip == RoundTrip::WithoutAddedTokenText)
      for (const std::string& token : added_tokens)
        round_trips = round_trips && text.find(token) == std::string::npos;
    if (c.round_trip == RoundTrip::WithoutLeadingSpace) round_trips = round_trips && text[0] != ' ';
    if (round_trips)
      EXPECT_EQ(compare_text(c.round_trip == RoundTrip::Normalized ? reference_text : text,
                             tokenizer->decode(ids)),
                "")
          << "decode(encode(x))";

    const std::vector<int32_t> with_special = tokenizer->encode_with_specials(text);
    EXPECT_EQ(with_special.size(), r.at("with_special_length").get<size_t>()) << "with specials";
    const auto head = r.at("with_special_head").get<std::vector<int32_t>>();
    const auto tail = r.at("with_special_tail").get<std::vector<int32_t>>();
    if (with_special.size() >= head.size() && with_special.size() >= tail.size()) {
      EXPECT_EQ(std::vector<int32_t>(with_special.begin(), with_special.begin() + head.size()),
                head);
      EXPECT_EQ(std::vector<int32_t>(with_special.end() - tail.size(), with_special.end()), tail);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    FixtureTokenizers, Conformance,
    ::testing::Values(Case{"llama3", "llama3", "", RoundTrip::Always},
                      Case{"qwen3_nfc", "qwen3", "", RoundTrip::Normalized},
                      Case{"llama2_prepend_byte_fallback", "llama2", "",
                           RoundTrip::WithoutAddedTokenText},
                      Case{"llama2_metaspace_first", "llama2", "metaspace",
                           RoundTrip::WithoutLeadingSpace},
                      Case{"gemma_byte_fallback", "gemma", "", RoundTrip::Always},
                      Case{"gpt2_byte_level_regex", "llama3", "gpt2", RoundTrip::Always},
                      Case{"llama3_split_behaviors", "llama3", "split_behaviors", RoundTrip::Always},
                      Case{"llama3_lowercase_nfkc_digits", "llama3", "lowercase_nfkc_digits",
                           RoundTrip::Normalized},
                      Case{"qwen3_nfd_strip_accents", "qwen3", "nfd_strip_accents",
                           RoundTrip::Normalized},
                      // SmolLM2's byte-level BPE as scripts/real_model.sh converts it
                      Case{"smollm2", "real:smollm2", "", RoundTrip::Always},
                      // Gemma 3's: Replace(" ", "▁") and a MergedWithPrevious split, byte
                      // fallback, a 262,144-piece vocabulary
                      Case{"gemma3", "real:gemma3", "", RoundTrip::Always}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace sarqc

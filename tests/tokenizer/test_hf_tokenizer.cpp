// The tokenizer.json pipeline on hand-made files whose ids are worked out by hand (BPE by rank
// then leftmost; byte fallback; added tokens; templates), and its errors.
#include <gtest/gtest.h>

#include "sarqc/io/tokenizer.h"
#include "test_support.h"
#include "tiny_tokenizers.h"

namespace sarqc {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

const std::string kMeta = "\xE2\x96\x81";

std::unique_ptr<Tokenizer> load(const json& tokenizer, const json& config = nullptr) {
  static int counter = 0;
  static test::TempDir root;
  const auto dir = root / std::to_string(counter++);
  std::filesystem::create_directories(dir);
  test::write_tokenizer(dir, tokenizer, config);
  return load_tokenizer(dir);
}

TEST(ByteLevelMap, KnownCharacters) {
  const auto& chars = tokenizer::byte_level_chars();
  EXPECT_EQ(chars[' '], "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(chars['\n'], "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(chars['\t'], "\xC4\x89");  // U+0109 'ĉ'
  EXPECT_EQ(chars['a'], "a");
  EXPECT_EQ(chars[0xAD], "\xC5\x83");  // soft hyphen is not printable: U+0143
  EXPECT_EQ(tokenizer::byte_level_byte(0x120), ' ');
  EXPECT_EQ(tokenizer::byte_level_byte(0x4E2D), -1);
}

TEST(HfTokenizer, ByteLevelBpeMergesByRankThenLeftmost) {
  const auto tok = load(test::tiny_byte_level_json());
  EXPECT_EQ(tok->kind(), "tokenizer.json BPE");
  EXPECT_EQ(tok->vocab_size(), 304);
  // "the" -> t + he (Ġt needs Ġ); " the" -> Ġt, he, then Ġthe.
  EXPECT_EQ(tok->encode("the the"), (Ids{'t', 256, 258}));
  EXPECT_EQ(tok->encode("aaa"), (Ids{259, 'a'}));
  EXPECT_EQ(tok->encode("aaaa"), (Ids{259, 259}));
  EXPECT_EQ(tok->encode(""), Ids{});
  EXPECT_EQ(tok->decode({'t', 256, 258}), "the the");
}

TEST(HfTokenizer, AddedTokensLongestMatchAndStrip) {
  const auto tok = load(test::tiny_byte_level_json());
  EXPECT_EQ(tok->encode("<|x|>yz"), (Ids{302, 'z'}));
  EXPECT_EQ(tok->encode("<|x|>z"), (Ids{301, 'z'}));
  EXPECT_EQ(tok->encode("a <mask> b"), (Ids{'a', 303, 'b'}));  // lstrip and rstrip eat the spaces
  EXPECT_EQ(tok->encode("<|bos|>the"), (Ids{300, 't', 256}));
  EXPECT_EQ(tok->decode({300, 't', 256}), "<|bos|>the");
}

TEST(HfTokenizer, InvalidUtf8IsReadAsReplacementCharacters) {
  const auto tok = load(test::tiny_byte_level_json());
  const Ids replacement = tok->encode("\xEF\xBF\xBD");  // U+FFFD
  EXPECT_EQ(replacement, (Ids{0xEF, 0xBF, 0xBD}));
  EXPECT_EQ(tok->encode("\xFF"), replacement);
  EXPECT_EQ(tok->encode("\xF0\x9F\x98"), replacement);  // one for the truncated sequence
  EXPECT_EQ(tok->encode("\xC0\xAF").size(), 2 * replacement.size());
}

TEST(HfTokenizer, TemplateAndTokenizerConfigSpecials) {
  auto tok = load(test::tiny_byte_level_json());
  EXPECT_EQ(tok->special().prefix, Ids{300});
  EXPECT_TRUE(tok->special().suffix.empty());
  EXPECT_EQ(tok->encode_with_specials("the"), (Ids{300, 't', 256}));

  tok = load(test::tiny_byte_level_json(), {{"add_bos_token", false}});
  EXPECT_EQ(tok->encode_with_specials("the"), (Ids{'t', 256}));

  tok = load(
      test::tiny_byte_level_json(),
      {{"bos_token", "<|bos|>"}, {"eos_token", {{"content", "<|x|>"}}}, {"add_eos_token", true}});
  EXPECT_EQ(tok->special().bos_id, 300);
  EXPECT_EQ(tok->special().eos_id, 301);
  EXPECT_EQ(tok->encode_with_specials("the"), (Ids{300, 't', 256, 301}));

  test::expect_bad_input(
      [&] {
        load(test::tiny_byte_level_json(), {{"bos_token", "<nope>"}});
      },
      "tokenizer_config.json: bos_token '<nope>' is not a token of");
  test::expect_bad_input(
      [&] {
        load(test::tiny_byte_level_json(), {{"add_eos_token", true}});
      },
      "add_eos_token is true but no eos_token is named");
}

TEST(HfTokenizer, MetaspaceByteFallbackAndUnknowns) {
  auto tok = load(test::tiny_metaspace_json());
  EXPECT_EQ(tok->encode("hi hi"), (Ids{263, 263}));
  const Ids e_acute{3 + 0xC3, 3 + 0xA9};  // é is not in the vocabulary: its UTF-8 bytes
  EXPECT_EQ(tok->encode("hi\xC3\xA9"), (Ids{263, e_acute[0], e_acute[1]}));
  EXPECT_EQ(tok->decode({263, e_acute[0], e_acute[1]}), "hi\xC3\xA9");
  // The Prepend normalizer runs on each text section, also after an added token.
  EXPECT_EQ(tok->encode("hi<s>hi"), (Ids{263, 1, 263}));
  EXPECT_EQ(tok->encode_with_specials("hi"), (Ids{1, 263}));
  EXPECT_EQ(tok->special().unk_id, 0);

  // Without <0xNN> tokens an unknown character is <unk>, and fuse_unk merges a run of them.
  tok = load(test::tiny_metaspace_json(/*with_byte_tokens=*/false));
  EXPECT_EQ(tok->encode("h\xC3\xA9\xC3\xA9"), (Ids{262, 0}));
  json no_fuse = test::tiny_metaspace_json(false);
  no_fuse["model"]["fuse_unk"] = false;
  EXPECT_EQ(load(no_fuse)->encode("h\xC3\xA9\xC3\xA9"), (Ids{262, 0, 0}));
}

// Sections longer than 256 bytes are merged in chunks; the result must be that of one piece.
TEST(HfTokenizer, LongSectionsMergeAsOnePiece) {
  json j = test::tiny_metaspace_json();
  j["model"]["vocab"]["hh"] = 264;
  j["model"]["merges"].push_back("h h");  // rank 2, after ▁h and ▁hi
  const auto tok = load(j);
  // ▁ + 301 h: ▁h first (best rank), then hh pairs from the left.
  Ids expected{262};
  expected.insert(expected.end(), 150, 264);
  EXPECT_EQ(tok->encode(std::string(301, 'h')), expected);
  std::string words;
  for (int i = 0; i < 200; ++i) words += "hi ";
  Ids hi(200, 263);
  hi.push_back(259);  // the trailing space is a last ▁
  EXPECT_EQ(tok->encode(words), hi);
}

TEST(HfTokenizer, MetaspacePreTokenizerSchemesAndSplit) {
  json j = test::tiny_metaspace_json();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", kMeta}, {"prepend_scheme", "first"}, {"split", false}};
  auto tok = load(j);
  EXPECT_EQ(tok->encode("hi hi"), (Ids{263, 263}));
  EXPECT_EQ(tok->encode("<s>hi"), (Ids{1, 260, 261}));  // not the first section: no ▁
  j["pre_tokenizer"]["prepend_scheme"] = "always";
  EXPECT_EQ(load(j)->encode("<s>hi"), (Ids{1, 263}));
  j["pre_tokenizer"]["prepend_scheme"] = "never";
  EXPECT_EQ(load(j)->encode("hi"), (Ids{260, 261}));
  // With a best-ranked "▁ ▁" merge, "▁▁hi" is ▁▁ h i as one piece, but split cuts it before
  // each ▁ into "▁" and "▁hi".
  j["model"]["vocab"][kMeta + kMeta] = 264;
  j["model"]["merges"].insert(j["model"]["merges"].begin(), kMeta + " " + kMeta);
  EXPECT_EQ(load(j)->encode("  hi"), (Ids{264, 260, 261}));
  j["pre_tokenizer"]["split"] = true;
  EXPECT_EQ(load(j)->encode("  hi"), (Ids{259, 263}));
}

// A file with one component replaced; the error must name that component.
struct BadFile {
  const char* what;
  std::function<void(json&)> edit;
  const char* message;
};

TEST(HfTokenizer, MalformedOrUnsupportedFilesNameTheComponent) {
  const std::vector<BadFile> cases = {
      {"model type", [](json& j) { j["model"]["type"] = "WordPiece"; },
       "tokenizer.json: model (WordPiece): unsupported model type 'WordPiece' (supported: BPE)"},
      {"missing merges", [](json& j) { j["model"].erase("merges"); },
       "tokenizer.json: model (BPE): missing 'merges'"},
      {"merge outside vocab",
       [](json& j) {
         j["model"]["merges"].push_back(json::array({"x", "q"}));
       },
       "tokenizer.json: model (BPE).merges[4]: \"xq\" is not in model.vocab"},
      {"malformed merge", [](json& j) { j["model"]["merges"].push_back("xq"); },
       "merges[4]: must be two tokens separated by one space"},
      {"regex syntax",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(ab"; },
       "tokenizer.json: pre_tokenizer (Sequence).pretokenizers[0] (Split).pattern: regex \"(ab\" "
       "is not supported: missing ')'"},
      {"regex compile",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "a**"; },
       "pretokenizers[0] (Split).pattern: regex \"a**\" does not compile"},
      {"nested class",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[a[b]]"; },
       "nested character classes are not supported"},
      {"split behavior",
       [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
       "(Split).behavior: unsupported split behavior 'Sideways' (supported: Isolated, Removed, "
       "MergedWithPrevious, MergedWithNext, Contiguous)"},
      {"pre-tokenizer type",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "tokenizer.json: pre_tokenizer (Whitespace): unsupported pre-tokenizer type 'Whitespace'"},
      {"normalizer type",
       [](json& j) {
         j["normalizer"] = {{"type", "Precompiled"}};
       },
       "tokenizer.json: normalizer (Precompiled): unsupported normalizer type 'Precompiled'"},
      {"decoder type",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "tokenizer.json: decoder (WordPiece): unsupported decoder type 'WordPiece'"},
      {"post-processor type",
       [](json& j) {
         j["post_processor"] = {{"type", "Magic"}};
       },
       "tokenizer.json: post_processor (Magic): unsupported post-processor type 'Magic'"},
      {"vocab id", [](json& j) { j["model"]["vocab"]["zz"] = "one"; },
       "tokenizer.json: model (BPE).vocab: the id of token \"zz\" must be an integer in [0, "},
      {"huge id", [](json& j) { j["model"]["vocab"]["zz"] = 4000000000LL; },
       "the id of token \"zz\" must be an integer in [0, 16777215], got 4000000000"},
      {"huge added id", [](json& j) { j["added_tokens"][0]["id"] = 1LL << 40; },
       "tokenizer.json: added_tokens[0].id: must be in [0, 16777215]"},
      {"unk token", [](json& j) { j["model"]["unk_token"] = "<unk>"; },
       "model (BPE).unk_token: '<unk>' is not in model.vocab"},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, "BPE dropout is not supported"},
      {"no type",
       [](json& j) {
         j["normalizer"] = {{"lowercase", true}};
       },
       "tokenizer.json: normalizer: missing 'type'"},
      {"added token", [](json& j) { j["added_tokens"][0].erase("id"); },
       "tokenizer.json: added_tokens[0]: missing 'id'"},
  };
  for (const BadFile& c : cases) {
    SCOPED_TRACE(c.what);
    json j = test::tiny_byte_level_json();
    c.edit(j);
    test::expect_bad_input([&] { load(j); }, c.message);
  }
  test::TempDir dir;
  test::write_bytes(dir / "tokenizer.json", "{\"model\": ");
  test::expect_bad_input([&] { load_tokenizer(dir.path()); }, "tokenizer.json: not valid JSON");
  const auto tok = load(test::tiny_byte_level_json());
  test::expect_bad_input([&] { tok->decode({5, 299}); }, "token id 299 is not in the vocabulary");
}

TEST(HfTokenizer, TokenizerJsonIsPreferredOverTokenizerModel) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  std::filesystem::copy_file(test::fixture_model("stories260K") / "tokenizer.model",
                             dir / "tokenizer.model");
  EXPECT_EQ(load_tokenizer(dir.path())->kind(), "sentencepiece");
  test::write_tokenizer(dir.path(), test::tiny_byte_level_json());
  const auto tok = load_tokenizer(dir.path());
  EXPECT_EQ(tok->kind(), "tokenizer.json BPE");
  EXPECT_EQ(tok->source(), dir / "tokenizer.json");
}

}  // namespace
}  // namespace sarqc

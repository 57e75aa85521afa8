#include <gtest/gtest.h>

#include "sarqc/io/tokenizer.h"
#include "test_support.h"

namespace sarqc {
namespace {

namespace fs = std::filesystem;

// reference.json: ids = [BOS] + encode(whole file); total_tokens_in_file counts them all.
struct TokenCount {
  const char* model;
  const char* text;
  size_t total_with_bos;
};

void PrintTo(const TokenCount& c, std::ostream* os) { *os << c.model << " on " << c.text; }

class FixtureTokenCounts : public ::testing::TestWithParam<TokenCount> {};

TEST_P(FixtureTokenCounts, MatchReferenceJson) {
  SARQC_REQUIRE_FIXTURES();
  const auto& p = GetParam();
  const auto tokenizer = load_tokenizer(test::fixture_model(p.model));
  const std::string text = test::read_bytes(test::fixture_text(p.text));
  const auto ids = tokenizer->encode_with_specials(text);
  EXPECT_EQ(ids.size(), p.total_with_bos);
  EXPECT_EQ(ids.front(), 1);  // BOS
  EXPECT_EQ(tokenizer->encode(text).size(), p.total_with_bos - 1);
}

INSTANTIATE_TEST_SUITE_P(
    ReferenceJson, FixtureTokenCounts,
    ::testing::Values(TokenCount{"stories260K", "tinystories_val.txt", 393019},
                      TokenCount{"stories260K", "wiki.test.raw", 809290},
                      TokenCount{"babyllama-tok105", "tinystories_val.txt", 789146},
                      TokenCount{"babyllama-tok105", "wiki.test.raw", 1288468}),
    [](const ::testing::TestParamInfo<TokenCount>& info) {
      std::string name = std::string(info.param.model) + "_" + info.param.text;
      for (char& ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return name;
    });

TEST(Tokenizer, StoriesSpecialTokensAndRoundTrip) {
  SARQC_REQUIRE_FIXTURES();
  const auto tok = load_tokenizer(test::fixture_model("stories260K"));
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->special().bos_id, 1);
  EXPECT_EQ(tok->special().eos_id, 2);
  EXPECT_EQ(tok->special().unk_id, 0);
  EXPECT_EQ(tok->special().prefix, std::vector<int32_t>{1});
  EXPECT_TRUE(tok->special().suffix.empty());
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  const auto ids = tok->encode(text);
  EXPECT_GT(ids.size(), 5u);
  EXPECT_EQ(tok->decode(ids), text);
  test::expect_bad_input([&] { tok->decode({5, 512}); }, "token id 512 is outside");
}

class TokenizerFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(test::fixture_model("stories260K") / "tokenizer.model"))
      GTEST_SKIP() << "fixtures not found at " << test::fixtures_dir();
    fs::copy_file(test::fixture_model("stories260K") / "tokenizer.model",
                  dir_ / "tokenizer.model");
  }
  test::TempDir dir_;
};

TEST_F(TokenizerFolder, ConfigObjectFormAndFlags) {
  test::write_bytes(dir_ / "tokenizer_config.json",
                    R"({"add_bos_token": false, "add_eos_token": true,
                        "eos_token": {"content": "</s>", "lstrip": false}})");
  const auto tok = load_tokenizer(dir_.path());
  EXPECT_TRUE(tok->special().prefix.empty());
  EXPECT_EQ(tok->special().suffix, std::vector<int32_t>{2});
  const auto ids = tok->encode_with_specials("hello");
  EXPECT_NE(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
}

TEST_F(TokenizerFolder, SpecialTokensMapIsUsedWhenConfigIsSilent) {
  test::write_bytes(dir_ / "special_tokens_map.json", R"({"bos_token": "<unknown-piece>"})");
  test::expect_bad_input([&] { load_tokenizer(dir_.path()); },
                         "bos_token '<unknown-piece>' is not a piece of");
}

TEST_F(TokenizerFolder, CorruptModelIsBadInput) {
  test::write_bytes(dir_ / "tokenizer.model", "this is not a protobuf");
  test::expect_bad_input([&] { load_tokenizer(dir_.path()); },
                         "tokenizer.model: cannot load sentencepiece model");
}

TEST_F(TokenizerFolder, InvalidConfigJsonIsBadInput) {
  test::write_bytes(dir_ / "tokenizer_config.json", "{");
  test::expect_bad_input([&] { load_tokenizer(dir_.path()); },
                         "tokenizer_config.json: not valid JSON");
}

TEST(Tokenizer, MissingOrUnsupportedFiles) {
  test::TempDir dir;
  test::expect_bad_input([&] { load_tokenizer(dir.path()); },
                         "no tokenizer.json or tokenizer.model found");
  test::write_bytes(dir / "tokenizer.json", "{}");
  test::expect_bad_input([&] { load_tokenizer(dir.path()); }, "tokenizer.json: missing 'model'");
}

}  // namespace
}  // namespace sarqc

#include <gtest/gtest.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "sarqc/pipeline/inspect.h"
#include "test_support.h"

namespace sarqc {
namespace {

struct ModelFacts {
  const char* model;
  int64_t hidden, intermediate, heads, kv_heads, head_dim, vocab, max_pos, parameters;
};

void PrintTo(const ModelFacts& f, std::ostream* os) { *os << f.model; }

class InspectFixture : public ::testing::TestWithParam<ModelFacts> {};

// Expectations from the fixtures README table and the file itself.
TEST_P(InspectFixture, SummaryMatchesConfigAndFile) {
  SARQC_REQUIRE_FIXTURES();
  const ModelFacts f = GetParam();
  const auto dir = test::fixture_model(f.model);
  const ModelSummary s = inspect_model({dir});
  const nlohmann::json j = to_json(s);
  EXPECT_EQ(j["schema_version"], kInspectSchemaVersion);
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["config"]["num_hidden_layers"], 5);
  EXPECT_EQ(j["config"]["hidden_size"], f.hidden);
  EXPECT_EQ(j["config"]["intermediate_size"], f.intermediate);
  EXPECT_EQ(j["config"]["num_attention_heads"], f.heads);
  EXPECT_EQ(j["config"]["num_key_value_heads"], f.kv_heads);
  EXPECT_EQ(j["config"]["head_dim"], f.head_dim);
  EXPECT_EQ(j["config"]["vocab_size"], f.vocab);
  EXPECT_EQ(j["config"]["max_position_embeddings"], f.max_pos);
  EXPECT_EQ(j["config"]["tie_word_embeddings"], true);
  EXPECT_EQ(j["parameters"]["total"], f.parameters);
  // Quantizable: the seven linears of each of the five layers.
  const int64_t per_layer = f.hidden * (f.heads * f.head_dim) * 2 +
                            f.hidden * (f.kv_heads * f.head_dim) * 2 +
                            3 * f.hidden * f.intermediate;
  EXPECT_EQ(j["parameters"]["quantizable"], 5 * per_layer);
  EXPECT_EQ(j["checkpoint"]["dtypes"]["F32"], 47);
  EXPECT_EQ(j["layers"].size(), 5u);
  EXPECT_EQ(j["layers"][0]["modules"].size(), 7u);
  EXPECT_EQ(j["layers"][0]["modules"][6]["name"], "mlp.down_proj");
  EXPECT_EQ(j["layers"][0]["modules"][6]["in_features"], f.intermediate);
  // Data bytes = file size - 8 - header length, read straight from the file.
  const std::string bytes = test::read_bytes(dir / "model.safetensors");
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  EXPECT_EQ(j["memory"]["weights_bytes"], bytes.size() - 8 - header);
  EXPECT_EQ(j["memory"]["assumed_seqlen"], f.max_pos);  // 2048 clamped to max positions
  EXPECT_EQ(j["tokenizer"]["kind"], "sentencepiece");
  EXPECT_EQ(j["tokenizer"]["vocab_size"], f.vocab);
  EXPECT_EQ(j["tokenizer"]["bos_id"], 1);
  EXPECT_TRUE(j["warnings"].empty());

  const std::string text = to_text(s);
  EXPECT_NE(text.find("layers 0-4 (dense)"), std::string::npos) << text;
  EXPECT_NE(text.find("LlamaForCausalLM"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    BothModels, InspectFixture,
    ::testing::Values(ModelFacts{"stories260K", 64, 172, 8, 4, 8, 512, 512, 260032},
                      ModelFacts{"babyllama-tok105", 128, 352, 8, 4, 16, 105, 256, 936448}),
    [](const ::testing::TestParamInfo<ModelFacts>& info) {
      return info.param.model[0] == 's' ? std::string("stories260K") : std::string("babyllama");
    });

TEST(Inspect, MissingTokenizerIsReportedNotFatal) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  for (const char* f : {"config.json", "model.safetensors"})
    std::filesystem::copy_file(test::fixture_model("stories260K") / f, dir / f);
  const ModelSummary s = inspect_model({dir.path()});
  EXPECT_FALSE(s.tokenizer.has_value());
  EXPECT_NE(s.tokenizer_error.find("no tokenizer.json or tokenizer.model"), std::string::npos);
}

}  // namespace
}  // namespace sarqc

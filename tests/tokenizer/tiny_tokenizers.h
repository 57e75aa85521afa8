#pragma once
// Hand-made tokenizer.json files small enough that every expected id can be worked out by hand.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "sarqc/tokenizer/byte_level.h"
#include "test_support.h"

namespace sarqc::test {

// Llama 3 layout. Byte b has id b (its byte-level character as the vocabulary entry), then
//   256 "he" (h e, rank 0)   257 "Ġt" (Ġ t, rank 1)   258 "Ġthe" (Ġt he, rank 2)
//   259 "aa" (a a, rank 3)
// added: 300 <|bos|> (special), 301 <|x|>, 302 <|x|>y (longest match wins), 303 <mask>
// (lstrip, rstrip); the template puts <|bos|> in front.
inline nlohmann::json tiny_byte_level_json() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer::byte_level_chars()[b]] = b;
  vocab["he"] = 256;
  vocab["\xC4\xA0t"] = 257;
  vocab["\xC4\xA0the"] = 258;
  vocab["aa"] = 259;
  const char* pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  auto added = [](int id, const char* content, bool special, bool strip) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", strip},
                {"rstrip", strip}, {"normalized", false}, {"special", special}};
  };
  return {{"version", "1.0"},
          {"added_tokens",
           {added(300, "<|bos|>", true, false), added(301, "<|x|>", true, false),
            added(302, "<|x|>y", true, false), added(303, "<mask>", true, true)}},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern", {{"Regex", pattern}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"},
               {"add_prefix_space", false},
               {"trim_offsets", true},
               {"use_regex", false}}}}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"special_tokens",
             {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {300}}, {"tokens", {"<|bos|>"}}}}}}}},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", json::array({json::array({"h", "e"}), json::array({"\xC4\xA0", "t"}),
                                    json::array({"\xC4\xA0t", "he"}), json::array({"a", "a"})})}}}};
}

// Llama 2 layout ("▁" is U+2581): 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then
//   259 "▁"   260 "h"   261 "i"   262 "▁h" (▁ h, rank 0)   263 "▁hi" (▁h i, rank 1)
// normalizer Prepend ▁ + Replace " " -> ▁; byte fallback; fuse_unk; BOS from the template.
inline nlohmann::json tiny_metaspace_json(bool with_byte_tokens = true) {
  using nlohmann::json;
  const std::string meta = "\xE2\x96\x81";
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  if (with_byte_tokens)
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      vocab[name] = 3 + b;
    }
  vocab[meta] = 259;
  vocab["h"] = 260;
  vocab["i"] = 261;
  vocab[meta + "h"] = 262;
  vocab[meta + "hi"] = 263;
  auto added = [](int id, const char* content) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  return {{"version", "1.0"},
          {"added_tokens", {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")}},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", meta}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", meta}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single",
             {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", meta}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"vocab", vocab},
            {"merges", json::array({meta + " h", meta + "h i"})}}}};
}

inline void write_tokenizer(const std::filesystem::path& dir, const nlohmann::json& tokenizer,
                            const nlohmann::json& config = nullptr) {
  write_bytes(dir / "tokenizer.json", tokenizer.dump());
  if (!config.is_null()) write_bytes(dir / "tokenizer_config.json", config.dump());
}

}  // namespace sarqc::test

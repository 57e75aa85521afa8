#include "sarqc/pipeline/tokenize.h"

#include <fmt/format.h>

#include <iostream>
#include <iterator>

#include "sarqc/io/tokenizer.h"
#include "sarqc/util/error.h"
#include "sarqc/util/file.h"

namespace sarqc {

TokenizeResult tokenize_file(const TokenizeOptions& options) {
  const auto tokenizer = load_tokenizer(options.model_dir);
  std::string text;
  if (options.input == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    if (std::cin.bad()) throw_runtime("cannot read standard input");
  } else {
    text = read_text_file(options.input);
  }
  TokenizeResult result;
  result.tokenizer_kind = tokenizer->kind();
  result.tokenizer_file = tokenizer->source();
  result.bytes = text.size();
  result.add_special = options.add_special;
  result.ids =
      options.add_special ? tokenizer->encode_with_specials(text) : tokenizer->encode(text);
  return result;
}

nlohmann::json to_json(const TokenizeResult& r) {
  return {{"tokenizer", {{"kind", r.tokenizer_kind}, {"file", r.tokenizer_file.string()}}},
          {"bytes", r.bytes},
          {"special_tokens_added", r.add_special},
          {"count", r.ids.size()},
          {"ids", r.ids}};
}

std::string to_text(const TokenizeResult& r) {
  std::string out;
  out.reserve(r.ids.size() * 6 + 1);
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(r.ids[i]);
  }
  out += '\n';
  return out;
}

}  // namespace sarqc

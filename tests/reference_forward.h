#pragma once
// Comparing sarqc's forward with a Python reference's (transformers): running a reference script
// on a job file, sarqc's log-probabilities of the targets, and the fp32 tolerance between them.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "python_reference.h"
#include "test_support.h"

namespace sarqc::test {

// Runs tests/<script> JOBS.json OUT.json in the venv with `requirements` and returns OUT's
// JSON; on failure, a non-fatal test failure with the script's output and an empty JSON.
inline nlohmann::json run_python_reference(const std::string& script, const nlohmann::json& jobs,
                                           const std::filesystem::path& dir,
                                           const std::vector<std::string>& requirements) {
  const auto [python, why] = venv_python(requirements);
  EXPECT_FALSE(python.empty()) << "transformers (scripts/venv.sh) is not available: " << why;
  if (python.empty()) return {};
  const std::string stem = std::filesystem::path(script).stem().string();
  const std::filesystem::path in = dir / (stem + ".jobs.json"), out = dir / (stem + ".out.json");
  write_bytes(in, jobs.dump());
  const std::filesystem::path path = std::filesystem::path(SARQC_SOURCE_DIR) / "tests" / script;
  const auto [status, text] = run_command(
      fmt::format("{} {} {} {}", shell_quote(python), shell_quote(path.string()),
                  shell_quote(in.string()), shell_quote(out.string())));
  EXPECT_EQ(status, 0) << text;
  return status == 0 ? nlohmann::json::parse(read_bytes(out)) : nlohmann::json{};
}

// A JSON array of equally long number arrays as a [rows, cols] fp64 tensor.
inline at::Tensor nested_to_tensor(const nlohmann::json& nested) {
  std::vector<double> flat;
  for (const nlohmann::json& row : nested)
    for (const nlohmann::json& v : row) flat.push_back(v.get<double>());
  return at::tensor(flat, at::kDouble).view({static_cast<int64_t>(nested.size()), -1});
}

struct TargetLogprobs {
  at::Tensor logprobs;  // [K, T] log p(target), fp64
  double max_abs_logit = 0;
};

// sarqc's forward of `folder` on the windows `inputs` ([K, T] int64).
inline TargetLogprobs sarqc_logprobs(const std::filesystem::path& folder, const at::Tensor& inputs,
                                     const at::Tensor& targets) {
  const ModelWeights weights = ModelWeights::open(folder);
  const at::Tensor logits = StreamingModel(weights, {}).forward(inputs).to(at::kDouble);
  return {at::log_softmax(logits, -1).gather(2, targets.unsqueeze(2)).squeeze(2),
          logits.abs().max().item<double>()};
}

// How far two fp32 forwards' log-probabilities may differ. Both round in fp32 (u = 2^-24): a
// dot product of K terms is off by about u·sqrt(K) relative, and the residual stream adds the
// errors of 2 sublayers per layer. transformers rounds the rotary angle p·θ_i in fp32 (sarqc:
// fp64), a relative error up to u·T more per layer. A log-probability differs by at most twice
// the logits' error (the logit and the log-sum-exp), that relative error times their scale.
inline double fp32_forward_tolerance(const ModelConfig& c, int64_t seqlen, double max_abs_logit) {
  const double u = std::ldexp(1.0, -24);
  const double relative =
      2.0 * static_cast<double>(c.num_hidden_layers) * u *
      (std::sqrt(static_cast<double>(std::max(c.hidden_size, c.intermediate_size))) +
       static_cast<double>(seqlen));
  return 2 * relative * max_abs_logit;
}

}  // namespace sarqc::test

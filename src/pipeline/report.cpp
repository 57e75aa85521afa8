#include "sarqc/pipeline/report.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "sarqc/util/error.h"
#include "sarqc/version.h"

namespace sarqc {

namespace {

// " lambda=… (how)" for a sarqc objective, else "".
std::string lambda_text(const LambdaChoice& c) {
  if (c.mode.empty()) return "";
  if (c.mode == "fixed") return fmt::format(" lambda={:.4g} saliency={}", c.lambda, c.saliency);
  if (c.mode == "lw" || !c.note.empty())
    return fmt::format(" lambda={:.4g} saliency={} (lw{})", c.lambda, c.saliency,
                       c.note.empty() ? "" : ": " + c.note);
  return fmt::format(
      " lambda={:.4g} saliency={} (auto: {:.4g} on the fit x {:.2f}; held-out loss {:.6g}, at 0 "
      "{:.6g}, lw {:.4g} {:.6g}; {} candidates in {:.2f} s)",
      c.lambda, c.saliency, c.fit_lambda, c.fit_share, c.held_out_chosen, c.held_out_zero,
      c.lw_lambda, c.held_out_lw, c.candidates, c.seconds);
}

}  // namespace

void log_module(const ModuleRecord& rec) {
  spdlog::info(
      "layer={} module={} method={} loss={:.6g} relative={:.4g} tokens={} damp={:.2f} "
      "seconds={:.3f} peak_mib={:.0f}{}{}",
      rec.layer, rec.module, rec.method, rec.loss, rec.relative_loss, rec.tokens, rec.damp,
      rec.seconds, rec.peak_host_bytes / 1048576.0, lambda_text(rec.lambda),
      rec.reason.empty() ? "" : " note=\"" + rec.reason + "\"");
}

namespace {

struct ReportTotals {
  std::map<std::string, int64_t> by_method;  // modules per method used
  double loss = 0;
};

ReportTotals totals(const QuantizeReport& r) {
  ReportTotals t;
  for (const auto& m : r.modules) ++t.by_method[m.method], t.loss += m.loss;
  return t;
}

// JSON has no NaN (nlohmann writes null): read back as NaN.
double number(const nlohmann::json& j, const char* key) {
  const auto& v = j.at(key);
  return v.is_null() ? std::nan("") : v.get<double>();
}

nlohmann::json sessions_json(const QuantizeReport& r) {
  nlohmann::json sessions = nlohmann::json::array();
  for (const auto& s : r.sessions)
    sessions.push_back({{"started", s.started},
                        {"first_layer", s.first_layer},
                        {"layers_done", s.layers_done},
                        {"restore_seconds", s.restore_seconds},
                        {"state_seconds", s.state_seconds},
                        {"seconds", s.seconds},
                        {"interrupted", s.interrupted}});
  return sessions;
}

}  // namespace

nlohmann::json lambda_choice_json(const LambdaChoice& c) {
  return {{"mode", c.mode},
          {"saliency", c.saliency},
          {"lambda", c.lambda},
          {"fit_lambda", c.fit_lambda},
          {"fit_share", c.fit_share},
          {"lw_lambda", c.lw_lambda},
          {"held_out_zero", c.held_out_zero},
          {"held_out_chosen", c.held_out_chosen},
          {"held_out_lw", c.held_out_lw},
          {"candidates", c.candidates},
          {"seconds", c.seconds},
          {"note", c.note}};
}

LambdaChoice lambda_choice_from_json(const nlohmann::json& j) {
  LambdaChoice c;
  c.mode = j.at("mode").get<std::string>();
  c.saliency = j.at("saliency").get<std::string>();
  c.lambda = number(j, "lambda");
  c.fit_lambda = number(j, "fit_lambda");
  c.fit_share = number(j, "fit_share");
  c.lw_lambda = number(j, "lw_lambda");
  c.held_out_zero = number(j, "held_out_zero");
  c.held_out_chosen = number(j, "held_out_chosen");
  c.held_out_lw = number(j, "held_out_lw");
  c.candidates = j.at("candidates").get<int>();
  c.seconds = number(j, "seconds");
  c.note = j.at("note").get<std::string>();
  return c;
}

nlohmann::json records_to_json(const QuantizeReport& r) {
  nlohmann::json modules = nlohmann::json::array();
  for (const auto& m : r.modules) {
    modules.push_back({{"layer", m.layer},
                       {"module", m.module},
                       {"method", m.method},
                       {"reason", m.reason},
                       {"loss", m.loss},
                       {"relative_loss", m.relative_loss},
                       {"tokens", m.tokens},
                       {"damp", m.damp},
                       {"alpha", m.alpha},
                       {"dead_columns", m.dead_columns},
                       {"seconds", m.seconds},
                       {"peak_host_bytes", m.peak_host_bytes},
                       {"lambda", lambda_choice_json(m.lambda)}});
  }
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers)
    layers.push_back({{"layer", l.layer},
                      {"seconds", l.seconds},
                      {"forward_seconds", l.forward_seconds},
                      {"statistics_seconds", l.statistics_seconds},
                      {"rounding_seconds", l.rounding_seconds},
                      {"write_seconds", l.write_seconds}});
  return {{"modules", modules},
          {"layers", layers},
          {"unquantized_modules", r.unquantized_modules},
          {"sessions", sessions_json(r)}};
}

void restore_records(QuantizeReport& r, const nlohmann::json& j) {
  try {
    r.modules.clear();
    for (const auto& m : j.at("modules")) {
      ModuleRecord rec;
      rec.layer = m.at("layer").get<int64_t>();
      rec.module = m.at("module").get<std::string>();
      rec.method = m.at("method").get<std::string>();
      rec.reason = m.at("reason").get<std::string>();
      rec.loss = number(m, "loss");
      rec.relative_loss = number(m, "relative_loss");
      rec.tokens = m.at("tokens").get<int64_t>();
      rec.damp = number(m, "damp");
      rec.alpha = number(m, "alpha");
      rec.dead_columns = m.at("dead_columns").get<int64_t>();
      rec.seconds = number(m, "seconds");
      rec.peak_host_bytes = m.at("peak_host_bytes").get<int64_t>();
      rec.lambda = lambda_choice_from_json(m.at("lambda"));
      r.modules.push_back(std::move(rec));
    }
    r.layers.clear();
    for (const auto& l : j.at("layers"))
      r.layers.push_back({l.at("layer").get<int64_t>(), number(l, "seconds"),
                          number(l, "forward_seconds"), number(l, "statistics_seconds"),
                          number(l, "rounding_seconds"), number(l, "write_seconds")});
    r.unquantized_modules = j.at("unquantized_modules").get<std::vector<std::string>>();
    r.sessions.clear();
    for (const auto& s : j.at("sessions"))
      r.sessions.push_back({s.at("started").get<std::string>(), s.at("first_layer").get<int64_t>(),
                            s.at("layers_done").get<int64_t>(), number(s, "restore_seconds"),
                            number(s, "state_seconds"), number(s, "seconds"),
                            s.at("interrupted").get<bool>()});
  } catch (const nlohmann::json::exception& e) {
    throw_runtime(fmt::format("saved report records are malformed: {}", e.what()));
  }
}

nlohmann::json to_json(const QuantizeReport& r) {
  const nlohmann::json records = records_to_json(r);
  const ReportTotals t = totals(r);
  int64_t interruptions = 0;
  for (const auto& s : r.sessions) interruptions += s.interrupted ? 1 : 0;
  return {{"sarqc_version", kVersion},
          {"out_dir", r.out_dir.string()},
          {"grid", r.grid},
          {"method", r.method},
          {"objective", r.objective},
          {"rounding", r.rounding},
          {"nsamples", r.nsamples},
          {"seqlen", r.seqlen},
          {"calibration_sha256", r.calibration_sha256},
          {"fingerprint", r.fingerprint},
          {"totals",
           {{"modules", r.modules.size()},
            {"by_method", t.by_method},
            {"loss", t.loss},
            {"seconds", r.seconds},
            {"peak_host_bytes", r.peak_host_bytes},
            {"peak_anonymous_bytes", r.peak_anonymous_bytes},
            {"peak_mapped_bytes", r.peak_mapped_bytes},
            {"estimated_peak_bytes", r.estimated_peak_bytes}}},
          {"interruptions", interruptions},
          {"sessions", records["sessions"]},
          {"unquantized_modules", r.unquantized_modules},
          {"layers", records["layers"]},
          {"modules", records["modules"]}};
}

std::string to_text(const QuantizeReport& r) {
  const ReportTotals t = totals(r);
  std::string methods;
  for (const auto& [name, count] : t.by_method) methods += fmt::format(" {} {}", name, count);
  return fmt::format(
      "wrote      {}\ngrid       {} ({} / {} / {})\nmodules   {}\ntotal loss {:.6g}\n"
      "time       {:.1f} s\nmemory     peak {:.1f} MiB anonymous (estimated {:.1f} MiB) + {:.1f} "
      "MiB of the mapped checkpoint\n",
      r.out_dir.string(), r.grid, r.method, r.objective, r.rounding, methods, t.loss, r.seconds,
      r.peak_anonymous_bytes / 1048576.0, r.estimated_peak_bytes / 1048576.0,
      r.peak_mapped_bytes / 1048576.0);
}

}  // namespace sarqc

#include "sarqc/pipeline/report.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <map>
#include <nlohmann/json.hpp>

#include "sarqc/version.h"

namespace sarqc {

void log_module(const ModuleRecord& rec) {
  spdlog::info(
      "layer={} module={} method={} loss={:.6g} relative={:.4g} tokens={} damp={:.2f} "
      "seconds={:.3f} peak_mib={:.0f}{}",
      rec.layer, rec.module, rec.method, rec.loss, rec.relative_loss, rec.tokens, rec.damp,
      rec.seconds, rec.peak_host_bytes / 1048576.0,
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

}  // namespace

nlohmann::json to_json(const QuantizeReport& r) {
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
                       {"peak_host_bytes", m.peak_host_bytes}});
  }
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : r.layers)
    layers.push_back({{"layer", l.layer},
                      {"seconds", l.seconds},
                      {"forward_seconds", l.forward_seconds},
                      {"statistics_seconds", l.statistics_seconds},
                      {"rounding_seconds", l.rounding_seconds},
                      {"write_seconds", l.write_seconds}});
  const ReportTotals t = totals(r);
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
          {"unquantized_modules", r.unquantized_modules},
          {"layers", layers},
          {"modules", modules}};
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

#include <memory>

#include "commands.h"
#include "sarqc/util/error.h"

namespace sarqc::cli {

Command add_quantize_command(CLI::App& app) {
  struct Flags {
    std::string model, out, method = "gptq", calib;
    int bits = 4, group_size = 128;
    bool force = false, json = false;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "quantize", "Quantize a model and write a GPTQ-format checkpoint "
                  "[not implemented in this version]");
  sub->add_option("--model", flags->model, "HuggingFace model folder")->required();
  sub->add_option("--out", flags->out, "Output folder (written atomically)")->required();
  sub->add_option("--bits", flags->bits, "Bits per weight")
      ->check(CLI::IsMember({2, 3, 4, 8}))
      ->capture_default_str();
  sub->add_option("--group-size", flags->group_size, "Group size along inputs (-1: per channel)")
      ->capture_default_str();
  sub->add_option("--method", flags->method, "Quantization method")->capture_default_str();
  sub->add_option("--calib", flags->calib, "Calibration text file, or 'self'");
  sub->add_flag("--force", flags->force, "Overwrite an existing output folder");
  sub->add_flag("--json", flags->json, "Print the final report as JSON");
  return {sub, [flags](const GlobalOptions& global) -> int {  // flags outlive parsing
            apply_global_options(global);
            throw Error(ErrorKind::NotImplemented,
                        "sarqc quantize is not implemented in this version (see README: status)");
          }};
}

}  // namespace sarqc::cli

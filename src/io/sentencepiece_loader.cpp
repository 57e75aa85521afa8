// Finds and opens the sentencepiece plugin (see sentencepiece_plugin.h for why it is one).
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>

#include "sarqc/util/error.h"
#include "sentencepiece_plugin.h"

namespace sarqc::detail {
namespace fs = std::filesystem;

namespace {

std::vector<fs::path> plugin_candidates() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("SARQC_PLUGIN_DIR"); env != nullptr && *env != '\0')
    dirs.emplace_back(env);
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    exe[n] = '\0';
    const fs::path bin = fs::path(exe).parent_path();
    dirs.push_back(bin);
    dirs.push_back(bin.parent_path() / "lib");  // installed layout: prefix/bin + prefix/lib
  }
  std::vector<fs::path> files;
  for (const auto& dir : dirs) files.push_back(dir / kSentencePiecePluginFile);
  return files;
}

CreateSentencePieceModelFn open_plugin() {
  std::string tried;
  for (const auto& file : plugin_candidates()) {
    std::error_code ec;
    if (!fs::exists(file, ec)) {
      tried += (tried.empty() ? "" : ", ") + file.string();
      continue;
    }
    void* handle = ::dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle == nullptr)
      throw_runtime(fmt::format("cannot load {}: {}", file.string(), ::dlerror()));
    auto create = reinterpret_cast<CreateSentencePieceModelFn>(
        ::dlsym(handle, kCreateSentencePieceModelSymbol));
    if (create == nullptr)
      throw_runtime(fmt::format("{}: missing symbol {}", file.string(),
                                kCreateSentencePieceModelSymbol));
    return create;  // the handle stays open for the life of the process
  }
  throw_runtime(fmt::format("sentencepiece plugin {} not found (looked at: {}); set "
                            "SARQC_PLUGIN_DIR to the folder that holds it",
                            kSentencePiecePluginFile, tried));
}

}  // namespace

std::unique_ptr<SentencePieceModel> create_sentencepiece_model() {
  static std::once_flag once;
  static CreateSentencePieceModelFn create = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    try {
      create = open_plugin();
    } catch (const Error& e) {
      failure = e.what();
    }
  });
  if (create == nullptr) throw_runtime(failure);
  return std::unique_ptr<SentencePieceModel>(create());
}

}  // namespace sarqc::detail

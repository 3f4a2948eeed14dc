// libFuzzer target: the whole model-directory loader (LoadModelDir in
// server/model/model_dir.h). The input is a model directory packed as
//   config.json bytes, kPartSeparator, model.safetensors bytes
// (tests/fuzz/make_seeds.py writes seeds that way); each input is written to
// a private temporary directory and loaded from there, as the server would.
// Any directory must load or fail with a clean error; a loaded model must
// match its config.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "server/model/model_dir.h"

namespace {

constexpr std::string_view kPartSeparator = "\n--model.safetensors--\n";

const std::string& ModelDirectory() {
  static const std::string* directory = [] {
    std::string pattern = (std::filesystem::temp_directory_path() /
                           "tvq-model-dir-fuzzer-XXXXXX")
                              .string();
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    return new std::string(pattern);
  }();
  return *directory;
}

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

void RemoveModelDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(ModelDirectory(), ignored);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ModelDirectory();
  std::atexit(RemoveModelDirectory);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t separator = input.find(kPartSeparator);
  const std::string_view config = input.substr(0, separator);
  const std::string_view weights =
      separator == std::string_view::npos
          ? std::string_view()
          : input.substr(separator + kPartSeparator.size());
  const std::string& directory = ModelDirectory();
  WriteFile(directory + "/config.json", config);
  if (separator == std::string_view::npos) {
    std::filesystem::remove(directory + "/model.safetensors");
  } else {
    WriteFile(directory + "/model.safetensors", weights);
  }
  auto model = tvq::runtime::LoadModelDir(directory);
  if (!model.ok()) return 0;
  if (model->weights == nullptr || model->tokenizer == nullptr ||
      model->tokenizer->vocab_size() > model->config().n_vocab) {
    std::abort();  // a model that loaded but does not fit its config
  }
  return 0;
}

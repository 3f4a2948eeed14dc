// libFuzzer target: config.json parsing and validation
// (server/model/model_config.h) on arbitrary text. A config that passes
// validation must give a tensor list whose sizes do not overflow.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = tvq::runtime::ParseModelConfig(text, "config.json");
  if (!config.ok()) return 0;
  if (!tvq::runtime::ValidateModelConfig(*config, "config.json").ok()) {
    return 0;
  }
  for (const tvq::runtime::TensorSpec& spec :
       tvq::runtime::ExpectedTensors(*config)) {
    int64_t elements = 1;
    for (int64_t dim : spec.shape) {
      if (dim <= 0) std::abort();  // a validated config with an empty tensor
      if (__builtin_mul_overflow(elements, dim, &elements)) std::abort();
    }
  }
  return 0;
}

// libFuzzer target: the safetensors parser (server/model/safetensors.h) on
// arbitrary bytes. Any input must give a tensor list or a clean error; a
// parsed tensor's bytes must lie inside the input and match its dtype and
// shape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <span>
#include <string>

#include "server/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> contents(
      reinterpret_cast<const std::byte*>(data), size);
  std::map<std::string, std::string> metadata;
  auto tensors =
      tvq::runtime::ParseSafetensors(contents, "fuzz.safetensors", &metadata);
  if (!tensors.ok()) return 0;
  for (const tvq::runtime::SafetensorsTensor& tensor : *tensors) {
    const std::byte* begin = tensor.bytes.data();
    const std::byte* end = begin + tensor.bytes.size();
    if (tensor.bytes.size() > 0 &&
        (begin < contents.data() || end > contents.data() + size)) {
      std::abort();  // a tensor outside the file
    }
    const int dtype_size = tvq::runtime::SafetensorsDtypeSize(tensor.dtype);
    if (dtype_size <= 0 || tensor.num_elements < 0 ||
        static_cast<uint64_t>(tensor.num_elements) * dtype_size !=
            tensor.bytes.size()) {
      std::abort();  // bytes that do not match dtype x shape
    }
  }
  return 0;
}

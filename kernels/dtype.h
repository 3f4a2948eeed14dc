// Element types of the tensors that cross the backend interface, shared by
// kernels/ and server/backend/ (plain C++17, no Abseil: usable from .cu and
// .cc files alike). Only kF32 (and kI32 for codes) is implemented today;
// kBF16 / kF16 name the types a later kernel set will add.
#ifndef TVQ_KERNELS_DTYPE_H_
#define TVQ_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>

namespace tvq::kernels {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kI32 = 3 };

// Bytes of one element.
constexpr size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
  }
  return 0;
}

// "F32", "BF16", "F16", "I32" (the names safetensors uses).
constexpr const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
  }
  return "unknown";
}

}  // namespace tvq::kernels

#endif  // TVQ_KERNELS_DTYPE_H_

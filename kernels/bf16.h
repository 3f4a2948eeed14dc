// bfloat16 <-> float32 conversion for the CPU kernels and the host code
// that prepares bf16 weights and state (plain C++17, no intrinsics).
//
// bf16 is the top half of an IEEE float32: 1 sign, 8 exponent and 7 stored
// mantissa bits (8 with the implicit one). Widening is exact; narrowing
// rounds to nearest, ties to even, and keeps NaNs NaN. The relative error
// of one narrowing is at most 2^-8 (half a unit in the last of 8 bits).
#ifndef TVQ_KERNELS_BF16_H_
#define TVQ_KERNELS_BF16_H_

#include <cstdint>
#include <cstring>

namespace tvq::kernels {

// The stored bits of one bf16 value.
using BFloat16 = uint16_t;

inline float BF16ToF32(BFloat16 value) {
  const uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, sizeof(result));
  return result;
}

inline BFloat16 F32ToBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<BFloat16>((bits >> 16) | 0x0040u);  // quiet NaN
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<BFloat16>((bits + rounding) >> 16);
}

// Converts n values (the CPU backend uses these at load time).
inline void F32ToBF16Array(int64_t n, const float* source,
                           BFloat16* destination) {
  for (int64_t i = 0; i < n; ++i) destination[i] = F32ToBF16(source[i]);
}
inline void BF16ToF32Array(int64_t n, const BFloat16* source,
                           float* destination) {
  for (int64_t i = 0; i < n; ++i) destination[i] = BF16ToF32(source[i]);
}

}  // namespace tvq::kernels

#endif  // TVQ_KERNELS_BF16_H_

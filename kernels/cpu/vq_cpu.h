// Vector quantization on the CPU: nearest codeword in float32.
#ifndef TVQ_KERNELS_CPU_VQ_CPU_H_
#define TVQ_KERNELS_CPU_VQ_CPU_H_

#include <cstdint>

namespace tvq::kernels::cpu {

// For each of `rows` keys (row stride key_stride, d_k floats) writes the
// index of the nearest codeword (codebook [S, d_k], squared norms [S]) to
// codes[i * code_stride], lowest index on ties. Distances are
// |c|^2 - 2 k.c (|k|^2 does not change the argmin), dot products by GEMM in
// float32; codewords within the GEMM's error bound of the best are rescored
// in double in a fixed order, so the result does not depend on where a
// codeword sits in the GEMM's tiling (equal codewords: the lowest index).
// `scratch` holds rows * S floats. Uses BLAS: call from one thread.
void VqAssign(int rows, int n_code, int d_k, const float* keys,
              int key_stride, const float* codebook,
              const float* codebook_sq_norm, int32_t* codes, int code_stride,
              float* scratch);

}  // namespace tvq::kernels::cpu

#endif  // TVQ_KERNELS_CPU_VQ_CPU_H_

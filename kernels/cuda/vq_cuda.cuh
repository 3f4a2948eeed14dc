// Vector quantization on CUDA: nearest codeword per head, float32 FMA
// distances (never TF32), lowest index on ties.
#ifndef TVQ_KERNELS_CUDA_VQ_CUDA_CUH_
#define TVQ_KERNELS_CUDA_VQ_CUDA_CUH_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tvq::kernels::cuda {

// For each of `rows` key rows (row stride key_stride; head h's d_k floats
// start at column h * d_k) and each head, writes to codes[i * n_head + h]
// the s minimizing |c_s|^2 - 2 k.c_s over codebook [n_head, n_code, d_k]
// (squared norms [n_head, n_code]); ties go to the lowest s, and rows whose
// distances are all NaN get 0.
cudaError_t VqAssign(int rows, int n_head, int n_code, int d_k,
                     const float* keys, int key_stride, const float* codebook,
                     const float* codebook_sq_norm, int32_t* codes,
                     cudaStream_t stream);

}  // namespace tvq::kernels::cuda

#endif  // TVQ_KERNELS_CUDA_VQ_CUDA_CUH_

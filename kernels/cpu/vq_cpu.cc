#include "kernels/cpu/vq_cpu.h"

#include <cblas.h>

namespace tvq::kernels::cpu {

void VqAssign(int rows, int n_code, int d_k, const float* keys,
              int key_stride, const float* codebook,
              const float* codebook_sq_norm, int32_t* codes, int code_stride,
              float* scratch) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_code, d_k,
              1.0f, keys, key_stride, codebook, d_k, 0.0f, scratch, n_code);
  for (int i = 0; i < rows; ++i) {
    const float* dots = scratch + static_cast<int64_t>(i) * n_code;
    int32_t best = 0;
    float best_distance = codebook_sq_norm[0] - 2.0f * dots[0];
    for (int s = 1; s < n_code; ++s) {
      const float distance = codebook_sq_norm[s] - 2.0f * dots[s];
      if (distance < best_distance) {
        best_distance = distance;
        best = s;
      }
    }
    codes[static_cast<int64_t>(i) * code_stride] = best;
  }
}

}  // namespace tvq::kernels::cpu

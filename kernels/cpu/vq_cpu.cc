#include "kernels/cpu/vq_cpu.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace tvq::kernels::cpu {
namespace {

// k.c in double, in index order: the same operations for every codeword
// wherever it sits in the codebook, so equal codewords give equal results.
double OrderedDot(int d_k, const float* key, const float* codeword) {
  double sum = 0;
  for (int c = 0; c < d_k; ++c) {
    sum += static_cast<double>(key[c]) * static_cast<double>(codeword[c]);
  }
  return sum;
}

}  // namespace

void VqAssign(int rows, int n_code, int d_k, const float* keys,
              int key_stride, const float* codebook,
              const float* codebook_sq_norm, int32_t* codes, int code_stride,
              float* scratch) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_code, d_k,
              1.0f, keys, key_stride, codebook, d_k, 0.0f, scratch, n_code);
  // The GEMM's rounding depends on where a codeword falls in its tiling,
  // so two equal (or nearly equal) codewords can come out in either order.
  // Every codeword within the GEMM's error bound of the best is therefore
  // rescored by OrderedDot, which does not depend on the position; the
  // lowest index wins an exact tie. Bound: |fl(k.c) - k.c| <= d_k u |k||c|
  // (u = 2^-24), doubled for the factor 2 and widened for the subtraction.
  float max_sq_norm = 0;
  for (int s = 0; s < n_code; ++s) {
    max_sq_norm = std::max(max_sq_norm, codebook_sq_norm[s]);
  }
  const double max_norm = std::sqrt(static_cast<double>(max_sq_norm));
  constexpr double kUnitRoundoff = 1.0 / (1 << 24);
  for (int i = 0; i < rows; ++i) {
    const float* key = keys + static_cast<int64_t>(i) * key_stride;
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
    double key_sq_norm = 0;
    for (int c = 0; c < d_k; ++c) {
      key_sq_norm += static_cast<double>(key[c]) * key[c];
    }
    const double margin = 4.0 * (d_k + 4) * kUnitRoundoff *
                          (2.0 * std::sqrt(key_sq_norm) * max_norm +
                           max_sq_norm + std::abs(best_distance));
    int candidates = 0;
    for (int s = 0; s < n_code && candidates < 2; ++s) {
      if (codebook_sq_norm[s] - 2.0f * dots[s] <= best_distance + margin) {
        ++candidates;
      }
    }
    if (candidates > 1) {
      double best_exact = 0;
      best = -1;
      for (int s = 0; s < n_code; ++s) {
        if (codebook_sq_norm[s] - 2.0f * dots[s] > best_distance + margin) {
          continue;
        }
        const double exact =
            static_cast<double>(codebook_sq_norm[s]) -
            2.0 * OrderedDot(d_k, key,
                             codebook + static_cast<int64_t>(s) * d_k);
        if (best < 0 || exact < best_exact) {
          best_exact = exact;
          best = s;
        }
      }
    }
    codes[static_cast<int64_t>(i) * code_stride] = best;
  }
}

}  // namespace tvq::kernels::cpu

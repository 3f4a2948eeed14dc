// The CUDA runtime and cuBLAS calls CudaBackend makes, implemented on the
// host for backend_conformance_emulated_test: device memory is host memory,
// the stream runs everything at once, events are always complete, one
// emulated device ("emulated sm_90", 4 SMs) is present, and the two cuBLAS
// GEMM entry points are column-major cblas_sgemm calls (CUDA_R_32F only).
// With the kernel sources compiled for tests/kernels/cuda_emulator, this
// lets the real CudaBackend (its argument handling, index staging, scratch
// management, row-major-to-cuBLAS mapping and the block attention composed
// in kernels/cuda) run through the backend conformance suite on a machine
// without a GPU. It checks logic, not the CUDA compiler or timing.
#include <cblas.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

char stream_storage, event_storage, handle_storage;

void* AllocateAligned(size_t bytes) {
  return std::aligned_alloc(256,
                            (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
}

CBLAS_TRANSPOSE ToCblas(cublasOperation_t operation) {
  return operation == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
}

}  // namespace

extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* properties, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  std::memset(properties, 0, sizeof(*properties));
  std::strcpy(properties->name, "emulated");
  properties->major = 9;
  properties->minor = 0;
  properties->multiProcessorCount = 4;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = reinterpret_cast<cudaStream_t>(&stream_storage);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = reinterpret_cast<cudaEvent_t>(&event_storage);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaMalloc(void** pointer, size_t bytes) {
  *pointer = AllocateAligned(bytes);
  return *pointer != nullptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* pointer) {
  std::free(pointer);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** pointer, size_t bytes) {
  return cudaMalloc(pointer, bytes);
}
cudaError_t cudaFreeHost(void* pointer) { return cudaFree(pointer); }
cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes,
                            cudaStream_t) {
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* destination, const void* source, size_t bytes,
                            cudaMemcpyKind, cudaStream_t) {
  std::memmove(destination, source, bytes);
  return cudaSuccess;
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  *handle = reinterpret_cast<cublasHandle_t>(&handle_storage);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) {
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) {
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t) {
  return "CUBLAS_STATUS_EMULATED";
}
const char* cublasGetStatusString(cublasStatus_t) {
  return "emulated cuBLAS error";
}

cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb, int m,
    int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
    long long int strideA, const void* B, cudaDataType Btype, int ldb,
    long long int strideB, const void* beta, void* C, cudaDataType Ctype,
    int ldc, long long int strideC, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t) {
  // Float32 in pedantic mode, or bfloat16 inputs with float32 output and
  // accumulation (the two combinations kernels/cuda asks for).
  const bool f32 = Atype == CUDA_R_32F && Btype == CUDA_R_32F &&
                   Ctype == CUDA_R_32F &&
                   computeType == CUBLAS_COMPUTE_32F_PEDANTIC;
  const bool bf16 = Atype == CUDA_R_16BF && Btype == CUDA_R_16BF &&
                    Ctype == CUDA_R_32F && computeType == CUBLAS_COMPUTE_32F;
  if (!f32 && !bf16) return CUBLAS_STATUS_NOT_SUPPORTED;
  // cuBLAS' own argument rules (column-major leading dimensions).
  if (m < 0 || n < 0 || k < 0 || batchCount < 0 ||
      lda < std::max(1, transa == CUBLAS_OP_N ? m : k) ||
      ldb < std::max(1, transb == CUBLAS_OP_N ? k : n) ||
      ldc < std::max(1, m)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const float* a = static_cast<const float*>(A);
  const float* b = static_cast<const float*>(B);
  float* c = static_cast<float*>(C);
  // bf16 inputs: widened exactly (the stored bits are a float32's top half).
  std::vector<float> a_wide, b_wide;
  if (bf16 && batchCount > 0) {
    auto widen = [](const void* source, int64_t count) {
      std::vector<float> wide(static_cast<size_t>(count));
      const auto* bits = static_cast<const uint16_t*>(source);
      for (int64_t i = 0; i < count; ++i) {
        const uint32_t word = static_cast<uint32_t>(bits[i]) << 16;
        std::memcpy(&wide[i], &word, sizeof(float));
      }
      return wide;
    };
    const int64_t a_cols = transa == CUBLAS_OP_N ? k : m;
    const int64_t b_cols = transb == CUBLAS_OP_N ? n : k;
    a_wide = widen(A, (batchCount - 1) * strideA + lda * a_cols);
    b_wide = widen(B, (batchCount - 1) * strideB + ldb * b_cols);
    a = a_wide.data();
    b = b_wide.data();
  }
  for (int i = 0; i < batchCount; ++i) {
    cblas_sgemm(CblasColMajor, ToCblas(transa), ToCblas(transb), m, n, k,
                *static_cast<const float*>(alpha), a + i * strideA, lda,
                b + i * strideB, ldb, *static_cast<const float*>(beta),
                c + i * strideC, ldc);
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k,
                            const void* alpha, const void* A,
                            cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta,
                            void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
  return cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A,
                                    Atype, lda, 0, B, Btype, ldb, 0, beta, C,
                                    Ctype, ldc, 0, 1, computeType, algo);
}

}  // extern "C"

// kernels/cuda/block_attention_cuda.cu compiled for the CPU emulator.
#include "tests/kernels/cuda_emulator.h"
// The emulator must come first.
#include "kernels/cuda/block_attention_cuda.cu"

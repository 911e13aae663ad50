// RBM_LAUNCH(kernel, grid, block, shared_bytes, stream, args...): kernel<<<...>>>(args...) under
// nvcc; under the host compiler (RBM_CUDA_EMULATION) cuda_emulation.h defines it as a loop that
// runs every block and thread on the CPU.  Launchers use it so one .cu file builds both ways.
#pragma once
#include "cuda_check.h"

#if !defined(RBM_CUDA_EMULATION)
#define RBM_LAUNCH(kernel, grid, block, shmem, stream, ...) kernel<<<grid, block, shmem, stream>>>(__VA_ARGS__)
#endif

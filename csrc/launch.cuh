// RBM_LAUNCH(kernel, grid, block, shared_bytes, stream, args...): kernel<<<...>>>(args...) under
// nvcc; under the host compiler (RBM_CUDA_EMULATION) cuda_emulation.h defines it as a loop that
// runs every block and thread on the CPU.  Launchers use it so one .cu file builds both ways.
#pragma once
#include "cuda_check.h"

// Both clear the thread's last error first: an error left there by an earlier call was already
// reported to its caller (ours by RBM_CUDA_CHECK, CuPy's by CuPy), and the check after a launch must
// report the launch's own error, not a stale one.
#if !defined(RBM_CUDA_EMULATION)
#define RBM_LAUNCH(kernel, grid, block, shmem, stream, ...)   \
    do {                                                      \
        (void)cudaGetLastError();                             \
        kernel<<<grid, block, shmem, stream>>>(__VA_ARGS__);  \
    } while (0)
#endif

// RBM_LAUNCH(kernel, grid, block, shared_bytes, stream, args...): kernel<<<...>>>(args...) under
// nvcc; under the host compiler (RBM_CUDA_EMULATION) cuda_emulation.h defines it as a loop that
// runs every block and thread on the CPU.  Launchers use it so one .cu file builds both ways.
#pragma once
#include <atomic>
#include <cstdint>

#include "cuda_check.h"

namespace rbm {
// Kernel launches made through RBM_LAUNCH since the module was loaded, over all threads
// (rbm::launch_count() reads it, for the backends' counts of the launches in a training batch).
inline std::atomic<uint64_t> launches{0};
}  // namespace rbm

// Both clear the thread's last error first: an error left there by an earlier call was already
// reported to its caller (ours by RBM_CUDA_CHECK, CuPy's by CuPy), and the check after a launch must
// report the launch's own error, not a stale one.
#if !defined(RBM_CUDA_EMULATION)
#define RBM_LAUNCH(kernel, grid, block, shmem, stream, ...)   \
    do {                                                      \
        (void)cudaGetLastError();                             \
        ::rbm::launches.fetch_add(1);                         \
        kernel<<<grid, block, shmem, stream>>>(__VA_ARGS__);  \
    } while (0)
#endif

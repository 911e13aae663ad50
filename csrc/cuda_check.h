// Every CUDA runtime call goes through RBM_CUDA_CHECK: a failure becomes std::runtime_error
// carrying the CUDA error string, file and line, which nanobind turns into a Python RuntimeError.
// In the host-compiler build of the kernels (RBM_CUDA_EMULATION) the runtime calls come from
// cuda_emulation.h instead.
#pragma once
#if defined(RBM_CUDA_EMULATION)
#include "cuda_emulation.h"
#else
#include <cuda_runtime.h>
#endif

#include <stdexcept>
#include <string>

namespace rbm {
[[noreturn]] inline void cuda_fail(cudaError_t err, const char *expr, const char *file, int line) {
    throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ") in " + expr + " at " + file + ":" +
                             std::to_string(line));
}
}  // namespace rbm

// A failing call also leaves its error as the thread's last error; it is consumed here, with the
// report, so that it does not resurface at the next launch's check.
#define RBM_CUDA_CHECK(expr)                                                  \
    do {                                                                      \
        cudaError_t rbm_err_ = (expr);                                        \
        if (rbm_err_ != cudaSuccess) {                                        \
            (void)cudaGetLastError();                                         \
            rbm::cuda_fail(rbm_err_, #expr, __FILE__, __LINE__);              \
        }                                                                     \
    } while (0)

// After a kernel launch: launch-configuration errors surface here, with the launcher's line.
#define RBM_CUDA_CHECK_LAUNCH() RBM_CUDA_CHECK(cudaGetLastError())

// Runtime facts for rbm_cuda.gpu: which CUDA runtime we linked, and how many devices it sees.
#include "device_info.h"

#include "cuda_check.h"

namespace rbm {

int runtime_version() {
    int v = 0;
    RBM_CUDA_CHECK(cudaRuntimeGetVersion(&v));
    return v;
}

int driver_version() {
    int v = 0;
    RBM_CUDA_CHECK(cudaDriverGetVersion(&v));
    return v;
}

int device_count() {
    int n = 0;
    RBM_CUDA_CHECK(cudaGetDeviceCount(&n));
    return n;
}

}  // namespace rbm

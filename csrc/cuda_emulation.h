// Runs CUDA kernel source on the host: the CUDA keywords, the built-in index variables, the few
// runtime calls our launchers use, and RBM_LAUNCH as a loop over the grid.  Included (first) by
// csrc/kernels_emu.cpp, which then includes csrc/kernels.cu itself, so rbm_cuda._emu is built from
// exactly the source that nvcc compiles into rbm_cuda._cuda.
//
// Supported subset (see csrc/EMULATION.md): kernels whose threads do not communicate except through
// atomicAdd.  A launch runs its blocks, and each block's threads, one after another on the calling
// host thread.  __shared__, __syncthreads, warp shuffles/votes and dynamic shared memory would need
// threads of a block to run concurrently, which this header does not do: using them is a compile
// error here (or, for dynamic shared memory, a launch error), never a silently wrong result.
#pragma once

#if defined(__CUDACC__)
#error "cuda_emulation.h is for the host-compiler build of the kernels; nvcc must not include it"
#endif

#ifndef RBM_CUDA_EMULATION
#define RBM_CUDA_EMULATION 1
#endif

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <atomic>
#include <tuple>
#include <utility>
#include <vector>

// ---- keywords ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// __restrict__ is understood by GCC and Clang as it is.

// Shared memory needs a block's threads to run concurrently with a barrier: not emulated.
#define __shared__ \
    static_assert(false, "__shared__ is not supported by the sequential emulation (csrc/EMULATION.md)");

namespace rbm_emu {
template <class... T>
constexpr bool unsupported = false;
}  // namespace rbm_emu

template <class... T>
inline void __syncthreads(T...) {
    static_assert(rbm_emu::unsupported<T...>,
                  "__syncthreads is not supported by the sequential emulation (csrc/EMULATION.md)");
}
template <class... T>
inline void __syncwarp(T...) {
    static_assert(rbm_emu::unsupported<T...>,
                  "__syncwarp is not supported by the sequential emulation (csrc/EMULATION.md)");
}
#define RBM_EMU_UNSUPPORTED_WARP_OP(name)                                                              \
    template <class... T>                                                                              \
    inline unsigned name(T...) {                                                                       \
        static_assert(rbm_emu::unsupported<T...>,                                                      \
                      #name " (warp-level) is not supported by the sequential emulation (csrc/EMULATION.md)"); \
        return 0;                                                                                      \
    }
RBM_EMU_UNSUPPORTED_WARP_OP(__shfl_sync)
RBM_EMU_UNSUPPORTED_WARP_OP(__shfl_up_sync)
RBM_EMU_UNSUPPORTED_WARP_OP(__shfl_down_sync)
RBM_EMU_UNSUPPORTED_WARP_OP(__shfl_xor_sync)
RBM_EMU_UNSUPPORTED_WARP_OP(__ballot_sync)
RBM_EMU_UNSUPPORTED_WARP_OP(__any_sync)
RBM_EMU_UNSUPPORTED_WARP_OP(__all_sync)
RBM_EMU_UNSUPPORTED_WARP_OP(__activemask)
RBM_EMU_UNSUPPORTED_WARP_OP(__match_any_sync)
#undef RBM_EMU_UNSUPPORTED_WARP_OP

// ---- built-in variables ----------------------------------------------------------------------
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
// thread_local: two Python threads may run emulated launches at the same time.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// ---- runtime API subset -------------------------------------------------------------------------
struct CUstream_st;
typedef struct CUstream_st *cudaStream_t;

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
};

inline const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    }
    return "cudaErrorUnknown";
}

inline const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument (emulated)";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument (emulated)";
        case cudaErrorInvalidDevice: return "invalid device ordinal (emulated)";
    }
    return "unknown error (emulated)";
}

namespace rbm_emu {
inline thread_local cudaError_t last_error = cudaSuccess;

// Order in which a launch visits blocks and the threads of a block.  Kernels whose threads do not
// race give the same result in any order; tests run several orders to look for races the
// sequential emulation would otherwise hide.  `shuffled` permutes the blocks of each launch, and
// the threads of each block, by a generator seeded with (schedule_seed, launches since the
// schedule was set), so a run is reproducible and every launch gets a different order.
enum class Schedule { forward, reverse, shuffled };
inline Schedule schedule = Schedule::forward;
inline uint64_t schedule_seed = 0;
inline std::atomic<uint64_t> schedule_launches{0};

inline void set_schedule(Schedule order, uint64_t seed) {
    schedule = order;
    schedule_seed = seed;
    schedule_launches = 0;
}

// splitmix64: a small, well-mixed generator for the shuffles (the order only has to be varied and
// reproducible, not random in any stronger sense).
struct SplitMix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint64_t below(uint64_t n) { return next() % n; }  // the bias of % is irrelevant here
};

inline void shuffle(std::vector<unsigned long long> &items, SplitMix64 &rng) {  // Fisher-Yates
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng.below(i)]);
}

// The generator of the next launch's order.
inline SplitMix64 launch_rng() { return SplitMix64{schedule_seed * 0x632BE59BD9B4E019ull + schedule_launches.fetch_add(1)}; }

// The order in which a launch visits n items (the blocks of its grid, or the threads of a block).
inline std::vector<unsigned long long> visit_order(unsigned long long n, Schedule order, SplitMix64 &rng) {
    std::vector<unsigned long long> out(n);
    for (unsigned long long i = 0; i < n; ++i) out[i] = order == Schedule::reverse ? n - 1 - i : i;
    if (order == Schedule::shuffled) shuffle(out, rng);
    return out;
}
}  // namespace rbm_emu

inline cudaError_t cudaGetLastError() {
    const cudaError_t e = rbm_emu::last_error;
    rbm_emu::last_error = cudaSuccess;
    return e;
}
inline cudaError_t cudaPeekAtLastError() { return rbm_emu::last_error; }
// As the runtime does, a failing call also records its error as the thread's last error, which the
// next cudaGetLastError returns: a launcher that does not clear it reports it after its own launch.
inline cudaError_t cudaSetDevice(int device) {
    if (device == 0) return cudaSuccess;
    rbm_emu::last_error = cudaErrorInvalidDevice;
    return cudaErrorInvalidDevice;
}
inline cudaError_t cudaGetDevice(int *device) {
    *device = 0;
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }  // launches are synchronous

// ---- device functions ------------------------------------------------------------------------------
// Threads of a launch run one at a time, so a read-modify-write is atomic.
inline float atomicAdd(float *address, float value) {
    const float old = *address;
    *address = old + value;
    return old;
}
inline double atomicAdd(double *address, double value) {
    const double old = *address;
    *address = old + value;
    return old;
}
inline int atomicAdd(int *address, int value) {
    const int old = *address;
    *address = old + value;
    return old;
}
inline unsigned int atomicAdd(unsigned int *address, unsigned int value) {
    const unsigned int old = *address;
    *address = old + value;
    return old;
}
// One thread at a time: every write is visible to the threads that run after it.
inline void __threadfence() {}
template <class T>
inline T __ldg(const T *address) {
    return *address;
}
// Fast-math intrinsics (__expf, __fdividef, ...) are deliberately absent: the kernels must use
// expf etc. so that the CPU build computes the same functions as the device build.

// ---- launches --------------------------------------------------------------------------------------
namespace rbm_emu {

inline bool valid_configuration(dim3 grid, dim3 block) {
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    return grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 2147483647u && grid.y <= 65535u &&
           grid.z <= 65535u && block.x >= 1 && block.y >= 1 && block.z >= 1 && block.x <= 1024u &&
           block.y <= 1024u && block.z <= 64u && threads <= 1024u;
}

// kernel<<<grid, block, shmem, stream>>>(args...) on the host: every thread of every block runs
// the kernel to completion, one after another, with its own copy of the arguments.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamic_shared_bytes,
            cudaStream_t /*stream: the host runs everything in order*/, Args &&...args) {
    static_assert(sizeof...(Params) == sizeof...(Args), "kernel launched with the wrong number of arguments");
    if (!valid_configuration(grid, block)) {
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    if (dynamic_shared_bytes != 0) {  // dynamic shared memory: not emulated (csrc/EMULATION.md)
        last_error = cudaErrorInvalidValue;
        return;
    }
    const std::tuple<Params...> arguments(std::forward<Args>(args)...);
    const dim3 saved_grid = gridDim, saved_block = blockDim;
    const uint3 saved_bidx = blockIdx, saved_tidx = threadIdx;
    gridDim = grid;
    blockDim = block;
    const unsigned long long n_blocks = 1ull * grid.x * grid.y * grid.z;
    const unsigned long long n_threads = 1ull * block.x * block.y * block.z;
    const Schedule order = schedule;
    SplitMix64 rng = launch_rng();
    const std::vector<unsigned long long> blocks = visit_order(n_blocks, order, rng);
    std::vector<unsigned long long> threads = visit_order(n_threads, order, rng);
    for (const unsigned long long ib : blocks) {
        blockIdx = uint3{static_cast<unsigned>(ib % grid.x), static_cast<unsigned>(ib / grid.x % grid.y),
                         static_cast<unsigned>(ib / grid.x / grid.y)};
        if (order == Schedule::shuffled) shuffle(threads, rng);  // each block in an order of its own
        for (const unsigned long long it : threads) {
            threadIdx = uint3{static_cast<unsigned>(it % block.x), static_cast<unsigned>(it / block.x % block.y),
                              static_cast<unsigned>(it / block.x / block.y)};
            std::apply(kernel, arguments);  // copies the arguments: each thread owns its parameters
        }
    }
    gridDim = saved_grid;
    blockDim = saved_block;
    blockIdx = saved_bidx;
    threadIdx = saved_tidx;
}

}  // namespace rbm_emu

#define RBM_LAUNCH(kernel, grid, block, shmem, stream, ...)      \
    do {                                                         \
        (void)cudaGetLastError(); /* see launch.cuh */           \
        ::rbm::launches.fetch_add(1);                            \
        ::rbm_emu::launch(kernel, grid, block, shmem, stream, __VA_ARGS__); \
    } while (0)

// Lets the kernel maths headers compile under nvcc and under a plain host compiler.
#pragma once
#if defined(__CUDACC__)
#define RBM_HD __host__ __device__
#else
#define RBM_HD
#endif

// Full unrolling of a loop with a compile-time trip count (keeps small per-thread arrays in
// registers on the device); nothing for host compilation (nvcc's host pass included: GCC would
// warn about the unknown pragma).
#if defined(__CUDA_ARCH__)
#define RBM_UNROLL _Pragma("unroll")
#else
#define RBM_UNROLL
#endif

// Lets the kernel maths headers compile under nvcc and under a plain host compiler.
#pragma once
#if defined(__CUDACC__)
#define RBM_HD __host__ __device__
#else
#define RBM_HD
#endif

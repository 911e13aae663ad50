// rbm_cuda._emu: csrc/kernels.cu itself, compiled by the host compiler.  cuda_emulation.h supplies
// the CUDA keywords, the index variables and RBM_LAUNCH as a loop over the grid; nothing of the
// kernels is re-implemented here.
#include "cuda_emulation.h"

#include "kernels.cu"

// Launchers of the RBM kernels (csrc/kernels.cu): plain C++ taking raw pointers (device memory
// under CUDA, host memory in the emulation build), sizes and a stream.  Each mirrors the Numba
// function of the same name in rbm_cuda/cpu/kernels.py: same arguments in the same order, the array
// shapes passed as counts.  Launch errors throw std::runtime_error (RBM_CUDA_CHECK); arguments the
// kernels cannot handle throw std::invalid_argument.  No CUDA header is needed to call them.
#pragma once
#include <cstdint>

struct CUstream_st;
typedef struct CUstream_st *cudaStream_t;

namespace rbm {

// Makes `device` current on the calling thread (CuPy's current device), so pointers and streams
// from CuPy match the device the launches go to.  No-op in the emulation build (device 0 only).
void use_device(int device);

// Blocks until `stream` has finished (for tests and timing).
void synchronize(cudaStream_t stream);

// Kernel launches made by this module since it was loaded (all threads).
uint64_t launch_count();

// Shapes: indptr[n_rows + 1], indices/states[nnz], values[n_values] (0 or nnz), rows[n_batch],
// W[n_items, n_levels, n_hidden], bh[n_hidden], prob_out/sample_out[n_batch, n_hidden].  Scratch for
// rows summed in parts (kernel_math.cuh, row_parts): partial[n_batch, kRowParts, n_hidden], any
// values (each part is written before it is read), and arrived[n_batch, n_hidden], which must be zero
// before the launch and is left zero by it.
void sample_hidden(const int64_t *indptr, const int32_t *indices, const int32_t *states, const float *values,
                   int64_t n_values, const int64_t *rows, int64_t n_batch, const float *W, int64_t n_levels,
                   int64_t n_hidden, const float *bh, uint64_t seed, uint32_t step, uint32_t gibbs, float *prob_out,
                   float *sample_out, bool sample, float *partial, int32_t *arrived, cudaStream_t stream);

// The batch grouped by item (rbm_cuda/cpu/kernels.py group_by_item; the CuPy backend computes it
// with a stable sort): start[n_items + 1], slot_b/slot_p[n_slots], delta[n_batch]; slot q is entry
// j = slot_p[q] + delta[slot_b[q]] of batch row slot_b[q].  The launchers below take the arrays
// they read, not the whole Numba argument list.
// h[n_batch, n_hidden] binary, bv[n_items, n_levels], out_states[nnz] (written at the batch's entries).
// The binary hidden states h are packed first into hbits[n_batch, (n_hidden + 31) / 32] (scratch the
// caller provides; a second launch), which the sampling kernel reads instead of h.
void sample_visible_softmax(const int32_t *indices, const int32_t *slot_b, const int32_t *slot_p,
                            const int64_t *delta, int64_t n_slots, const float *h, int64_t n_batch, uint32_t *hbits,
                            const float *W, const float *bv, int64_t n_levels, int64_t n_hidden, uint64_t seed,
                            uint32_t step, uint32_t gibbs, int32_t *out_states, cudaStream_t stream);

// logits, prob_out, sample_out [n_batch, width]; rows[n_batch].
void sigmoid_bernoulli(const float *logits, int64_t n_batch, int64_t width, const int64_t *rows, uint64_t seed,
                       uint32_t step, uint32_t gibbs, uint32_t phase, float *prob_out, float *sample_out,
                       cudaStream_t stream);

// kernels.compact_rows: the nonzero columns of each row of dense[n_batch, width] as CSR,
// indptr_out[n_batch + 1] and indices_out[>= n_batch * width] (each row's columns in increasing order).
// chunk_counts[n_batch * compact_chunks(width)] is scratch the caller provides.  Three launches.
constexpr int64_t kCompactChunk = 1024;
inline int64_t compact_chunks(int64_t width) { return (width + kCompactChunk - 1) / kCompactChunk; }
void compact_rows(const float *dense, int64_t n_batch, int64_t width, int64_t *chunk_counts, int64_t *indptr_out,
                  int32_t *indices_out, cudaStream_t stream);

// ph[n_batch, n_hidden], dW[n_items, n_levels, n_hidden], dbv[n_items, n_levels].
// Float atomics: the order of the additions, hence the last bits of dW and dbv, can vary per run.
void scatter_gradients(const int64_t *indptr, const int32_t *indices, const int32_t *states, const float *values,
                       int64_t n_values, const int64_t *rows, int64_t n_batch, const float *ph, float sign,
                       float *dW, float *dbv, int64_t n_levels, int64_t n_hidden, cudaStream_t stream);

// param, grad, velocity: float32[n].
void apply_update(float *param, float *grad, float *velocity, int64_t n, float learning_rate, float momentum,
                  float weight_decay, float scale, cudaStream_t stream);

// kernels.update_hidden_bias: grad[f] += sum_b ph0[b, f] - sum_b phT[b, f] (each sum in batch order),
// then the momentum update of bh (no decay) and grad zeroed.  ph0, phT [n_batch, n_hidden];
// bh, grad, velocity [n_hidden].
void update_hidden_bias(const float *ph0, const float *phT, int64_t n_batch, int64_t n_hidden, float *bh, float *grad,
                        float *velocity, float learning_rate, float momentum, float scale, cudaStream_t stream);

// kernels.update_softmax: the gradient of one CD step (+ph0 at the data states, -phT at the
// negative states, summed in slot order without atomics) and the momentum update of W and bv.
// W, vel_W [n_items, n_levels, n_hidden]; bv, vel_bv [n_items, n_levels]; ph0, phT [n_batch, n_hidden];
// states, neg_states[nnz].
// Only the items the batch rates are updated (last[i] = step for each); the others take their
// momentum-and-decay steps later, in catch_up.
void update_softmax(const int64_t *start, const int32_t *slot_b, const int32_t *slot_p, const int64_t *delta,
                    const int32_t *states, const int32_t *neg_states, const float *ph0, const float *phT, float *W,
                    float *bv, float *vel_W, float *vel_bv, int64_t n_items, int64_t n_levels, int64_t n_hidden,
                    float learning_rate, float momentum, float weight_decay, float scale, int64_t *last, int64_t step,
                    cudaStream_t stream);

// kernels.catch_up: each item start marks (start[i + 1] > start[i]) takes the step - last[i]
// zero-gradient steps it missed (powers_* [>= gap + 1, 4]: training.decay_powers); with `mark`,
// last[i] = step (a second launch; before update_softmax, which sets last itself, it is not needed).
void catch_up(const int64_t *start, int64_t *last, int64_t step, float *W, float *bv, float *vel_W, float *vel_bv,
              int64_t n_items, int64_t n_levels, int64_t n_hidden, const float *powers_W, const float *powers_bv,
              bool mark, cudaStream_t stream);

// ph[n_users, n_hidden], pair_rows[n_pairs], items[n_pairs], levels[n_levels], out[n_pairs].
void predict_pairs(const float *ph, const int64_t *pair_rows, const int32_t *items, int64_t n_pairs, const float *W,
                   const float *bv, const float *levels, int64_t n_levels, int64_t n_hidden, float *out,
                   cudaStream_t stream);

// logits[n_users, n_items * n_levels], bv[n_items, n_levels], out[n_users, n_items].
void score_items(const float *logits, int64_t n_users, const float *bv, int64_t n_items, int64_t n_levels,
                 const float *levels, float *out, cudaStream_t stream);

// out[n_batch]; scratch: float32[n_batch, n_hidden] of work space owned by the caller.
void free_energy(const int64_t *indptr, const int32_t *indices, const int32_t *states, const float *values,
                 int64_t n_values, const int64_t *rows, int64_t n_batch, const float *W, const float *bv,
                 const float *bh, int64_t n_levels, int64_t n_hidden, float *out, float *scratch,
                 cudaStream_t stream);

// Twins of rbm_cuda/cpu/philox.py philox_words / philox_uniforms, computed by a kernel: out[count].
void philox_words(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, int64_t count,
                  uint32_t *out, cudaStream_t stream);
void philox_uniforms(uint64_t seed, uint32_t step, uint32_t gibbs, uint32_t phase, uint64_t start, int64_t count,
                     float *out, cudaStream_t stream);

}  // namespace rbm

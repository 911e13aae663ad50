"""Choosing a backend.  Both implement the same methods with the same arguments:

  name, xp (numpy or cupy), asarray(a, dtype), to_numpy(a), reserve_hidden(n_rows, n_hidden) (scratch
  allocated before an epoch's batches), and the kernels
  group_by_item, sample_hidden, sample_visible_softmax, sigmoid_bernoulli, compact_rows,
  sample_bernoulli_rows, scatter_gradients, apply_update, update_bernoulli,
  update_softmax, catch_up, predict_pairs, score_items, free_energy (see rbm_cuda/cpu/kernels.py for their
  contracts).
"""

from __future__ import annotations

from . import gpu


def get_backend(device: str):
    """'cpu' -> Numba; 'cuda' -> CuPy + our kernels, or RuntimeError saying why not; 'auto' -> cuda
    when rbm_cuda.gpu.HAS_CUDA, else cpu."""
    if device == "auto":
        device = "cuda" if gpu.HAS_CUDA else "cpu"
    if device == "cpu":
        from .cpu.backend import NumbaBackend

        return NumbaBackend()
    if device == "cuda":
        gpu.cuda_module()  # raises with the reason when the GPU cannot be used
        from .cuda.backend import CupyBackend

        return CupyBackend()
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")

"""The GPU backend: CuPy arrays and the kernels of csrc/kernels.cu (rbm_cuda._cuda).

``rbm_cuda.backend.get_backend("cuda")`` builds a :class:`~rbm_cuda.cuda.backend.CupyBackend` once
``rbm_cuda.gpu.HAS_CUDA`` says the GPU can be used; importing this package never imports CuPy.
"""

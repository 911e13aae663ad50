"""Peer implementations the throughput benchmark runs beside rbm_cuda (each only when importable)."""

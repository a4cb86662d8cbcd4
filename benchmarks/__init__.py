"""Benchmarks that need the checkout (not installed with the package): `speed`, JAX against the
PyTorch references of reference/ (torch from requirements-bench.txt). Run from the checkout's root:

  python -m benchmarks.speed --quick
"""

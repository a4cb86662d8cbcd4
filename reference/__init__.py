"""Reference implementations outside the JAX package, for parity tests and benchmarks only."""

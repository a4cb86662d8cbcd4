"""The zoo untuned (each model at the shared default), 2 seeds: about an hour on 2 cores.

  python -m midpg_jax.compare --config configs/bench/synthetic_quick.py

What it runs and why: midpg_jax/compare/config.py (synthetic_quick()).
"""

from midpg_jax.compare import config


def get_config():
  return config.synthetic_quick()

"""MI-DPG by the weight of its MI term: lambda 0, 0.01 (default), 0.1, 1.0; 2 seeds.

  python -m midpg_jax.compare --config configs/bench/mi_weight.py

What it runs and why: midpg_jax/compare/config.py (mi_weight()).
"""

from midpg_jax.compare import config


def get_config():
  return config.mi_weight()

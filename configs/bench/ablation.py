"""MI-DPG's ablations on the built-in data, 3 seeds each, one switch per variant.

  python -m midpg_jax.compare --config configs/bench/ablation.py

What it runs and why: midpg_jax/compare/config.py (ablation()).
"""

from midpg_jax.compare import config


def get_config():
  return config.ablation()

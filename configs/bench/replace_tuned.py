"""MI-DPG's default (modulate) against its APG-style variant (replace), each tuned.

  python -m midpg_jax.compare --config configs/bench/replace_tuned.py

What it runs and why: midpg_jax/compare/config.py (replace_tuned()).
"""

from midpg_jax.compare import config


def get_config():
  return config.replace_tuned()

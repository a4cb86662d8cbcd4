"""The default comparison: every model of the zoo on the built-in data, tuned on validation.

  python -m midpg_jax.compare --config configs/bench/synthetic.py

What it runs and why: midpg_jax/compare/config.py (synthetic()).
"""

from midpg_jax.compare import config


def get_config():
  return config.synthetic()

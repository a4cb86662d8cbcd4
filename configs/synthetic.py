"""MI-DPG on the built-in synthetic dataset (the same as configs/default.py)."""

from midpg_jax import config


def get_config(mode: str | None = None):
  return config.get_config(mode)

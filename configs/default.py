"""Default config: MI-DPG on the built-in synthetic multi-scenario dataset (the commands' default
--config; `:instance` makes MI-DPG's generator instance-aware). Every key: midpg_jax/config.py.

  python train.py --config configs/default.py --config.model.midpg.rank=8
"""

from midpg_jax import config


def get_config(mode: str | None = None):
  return config.get_config(mode)

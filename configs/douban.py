"""A model on Douban in Scenario-Wise-Rec's form (scenario = domain; label = rating > 3).

  python train.py --config configs/douban.py \
      --config.data.manual_dir=<folder with the Scenario-Wise-Rec CSV files> --workdir runs/douban
The one file is split 80/10/10 at random (deterministic by config.data.seed). Data keys:
midpg_jax/data/scenario_wise_rec.py.
"""

from midpg_jax import config


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' (default) or 'instance'."""
  return config.get_config(mode, dataset='douban')

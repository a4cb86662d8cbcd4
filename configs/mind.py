"""A model on MIND in Scenario-Wise-Rec's form (scenario = news Category; label = click).

  python train.py --config configs/mind.py --config.data.manual_dir=<folder> --workdir runs/mind
The file mind_sample.csv (or --config.data.file) is split as configs/douban.py's.
"""

from midpg_jax import config


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' (default) or 'instance'."""
  return config.get_config(mode, dataset='mind')

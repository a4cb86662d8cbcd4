"""A model on Amazon reviews split by category (scenario = category; label = rating >= 4).

  python train.py --config configs/amazon.py --config.data.manual_dir=<folder with
      reviews_<Category>_5.json.gz files> --workdir runs/amazon
Data keys and the file format: midpg_jax/data/amazon.py (download instructions:
amazon.INSTRUCTIONS).
"""

from midpg_jax import config


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' (default) or 'instance'."""
  return config.get_config(mode, dataset='amazon')

"""A model on Amazon reviews split by category (scenario = category; label = rating >= 4).

  python train.py --config configs/amazon.py --config.data.manual_dir=<folder with
      reviews_<Category>_5.json.gz files> --workdir runs/amazon
Data keys and the file format: midpg_jax/data/amazon.py (download instructions:
amazon.INSTRUCTIONS).
"""

from configs import default
from midpg_jax.data import amazon


def get_config():
  config = default.get_config()
  config.data = amazon.data_config()
  return config

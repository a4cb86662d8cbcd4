"""A model on Amazon reviews split by category (scenario = category; label = rating >= 4).

  python train.py --config configs/amazon.py --config.data.manual_dir=<folder with
      reviews_<Category>_5.json.gz files> --workdir runs/amazon
Data keys and the file format: midpg_jax/data/amazon.py (download instructions:
amazon.INSTRUCTIONS).
"""

from configs import default
from midpg_jax.data import amazon


# The only user-side field of the review records.
INSTANCE_FIELDS = ('reviewerID',)


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' or 'instance' (default.DEFAULT_GENERATOR_MODE)."""
  config = default.get_config()
  config.data = amazon.data_config()
  return default.with_generator_mode(config, mode, INSTANCE_FIELDS)

"""A model on AliExpress (scenario = country; CVR = conversion on clicked rows).

  python train.py --config configs/aliexpress.py --config.data.manual_dir=<folder with
      AliExpress_NL/train.csv, AliExpress_NL/test.csv, ...> --workdir runs/aliexpress
The expected columns (search_id, categorical_1..16, numerical_1..63, click, conversion) and the
data keys: midpg_jax/data/aliexpress.py (download instructions: aliexpress.INSTRUCTIONS).
"""

from midpg_jax import config


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' (default) or 'instance'."""
  return config.get_config(mode, dataset='aliexpress')

"""A model on AliExpress (scenario = country; CVR = conversion on clicked rows).

  python train.py --config configs/aliexpress.py --config.data.manual_dir=<folder with
      AliExpress_NL/train.csv, AliExpress_NL/test.csv, ...> --workdir runs/aliexpress
The expected columns (search_id, categorical_1..16, numerical_1..63, click, conversion) and the
data keys: midpg_jax/data/aliexpress.py (download instructions: aliexpress.INSTRUCTIONS).
"""

from configs import default
from midpg_jax.data import aliexpress


def get_config():
  config = default.get_config()
  config.data = aliexpress.data_config()
  return config

"""A model on Ali-CCP (scenario = field 301; CVR = purchase on clicked rows).

  python train.py --config configs/aliccp.py --config.data.manual_dir=<folder with
      ali_ccp_train*.csv, ali_ccp_val*.csv, ali_ccp_test*.csv> --workdir runs/aliccp
Entire space instead of clicked rows: --config.data.clicked_only=False. Data keys and the file
format: midpg_jax/data/aliccp.py (download instructions: aliccp.INSTRUCTIONS).
"""

from configs import default
from midpg_jax.data import aliccp


def get_config():
  config = default.get_config()
  config.data = aliccp.data_config()
  return config

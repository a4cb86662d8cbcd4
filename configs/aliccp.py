"""A model on Ali-CCP (scenario = field 301; CVR = purchase on clicked rows).

  python train.py --config configs/aliccp.py --config.data.manual_dir=<folder with
      ali_ccp_train*.csv, ali_ccp_val*.csv, ali_ccp_test*.csv> --workdir runs/aliccp
Entire space instead of clicked rows: --config.data.clicked_only=False. Data keys and the file
format: midpg_jax/data/aliccp.py (download instructions: aliccp.INSTRUCTIONS).
"""

from configs import default
from midpg_jax.data import aliccp


# The user profile fields (Ali-CCP: 121 user category, 122 group, 124 gender, 125 age,
# 126-127 consumption levels, 128 occupation, 129 geography).
INSTANCE_FIELDS = ('121', '122', '124', '125', '126', '127', '128', '129')


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' or 'instance' (default.DEFAULT_GENERATOR_MODE)."""
  config = default.get_config()
  config.data = aliccp.data_config()
  return default.with_generator_mode(config, mode, INSTANCE_FIELDS)

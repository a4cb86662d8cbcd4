"""A model on Ali-CCP (scenario = field 301; CVR = purchase on clicked rows).

  python train.py --config configs/aliccp.py --config.data.manual_dir=<folder with
      ali_ccp_train*.csv, ali_ccp_val*.csv, ali_ccp_test*.csv> --workdir runs/aliccp
Entire space instead of clicked rows: --config.data.clicked_only=False. Data keys and the file
format: midpg_jax/data/aliccp.py (download instructions: aliccp.INSTRUCTIONS).
"""

from midpg_jax import config


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' (default) or 'instance'."""
  return config.get_config(mode, dataset='aliccp')

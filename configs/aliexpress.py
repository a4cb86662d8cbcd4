"""A model on AliExpress (scenario = country; CVR = conversion on clicked rows).

  python train.py --config configs/aliexpress.py --config.data.manual_dir=<folder with
      AliExpress_NL/train.csv, AliExpress_NL/test.csv, ...> --workdir runs/aliexpress
The expected columns (search_id, categorical_1..16, numerical_1..63, click, conversion) and the
data keys: midpg_jax/data/aliexpress.py (download instructions: aliexpress.INSTRUCTIONS).
"""

from configs import default
from midpg_jax.data import aliexpress


# The public files name no field; these are a guess, not a known user/context set
# (override with --config.model.midpg.generator_features=...).
INSTANCE_FIELDS = ('categorical_1', 'categorical_2', 'categorical_3', 'categorical_4')


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' or 'instance' (default.DEFAULT_GENERATOR_MODE)."""
  config = default.get_config()
  config.data = aliexpress.data_config()
  return default.with_generator_mode(config, mode, INSTANCE_FIELDS)

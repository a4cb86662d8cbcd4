"""A model on IAAC (IJCAI-18 Alimama ad conversion; scenario = user_gender_id).

  python train.py --config configs/iaac.py --config.data.manual_dir=<folder with
      round1_ijcai_18_train_20180301.txt> --workdir runs/iaac
Other scenario field: --config.data.scenario_field=context_page_id. Data keys and the file format:
midpg_jax/data/iaac.py (download instructions: iaac.INSTRUCTIONS).
"""

from configs import default
from midpg_jax.data import iaac


# User profile and hour of the context (not user_gender_id / context_page_id: either can be
# the scenario field).
INSTANCE_FIELDS = ('user_age_level', 'user_occupation_id', 'user_star_level', 'hour')


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' or 'instance' (default.DEFAULT_GENERATOR_MODE)."""
  config = default.get_config()
  config.data = iaac.data_config()
  return default.with_generator_mode(config, mode, INSTANCE_FIELDS)

"""A model on Douban in Scenario-Wise-Rec's form (scenario = domain; label = rating > 3).

  python train.py --config configs/douban.py \
      --config.data.manual_dir=../shared/data/Scenario-Wise-Rec --workdir runs/douban
The one file is split 80/10/10 at random (deterministic by config.data.seed). Data keys:
midpg_jax/data/scenario_wise_rec.py.
"""

from configs import default
from midpg_jax.data import scenario_wise_rec


# The user, where they live and the time of the rating.
INSTANCE_FIELDS = ('user_id', 'living_place', 'time_bin')


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' or 'instance' (default.DEFAULT_GENERATOR_MODE)."""
  config = default.get_config()
  config.data = scenario_wise_rec.douban_config()
  return default.with_generator_mode(config, mode, INSTANCE_FIELDS)

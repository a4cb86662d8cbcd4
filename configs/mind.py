"""A model on MIND in Scenario-Wise-Rec's form (scenario = news Category; label = click).

  python train.py --config configs/mind.py \
      --config.data.manual_dir=../shared/data/Scenario-Wise-Rec --workdir runs/mind
The one file is split 80/10/10 at random (deterministic by config.data.seed). Data keys:
midpg_jax/data/scenario_wise_rec.py.
"""

from configs import default
from midpg_jax.data import scenario_wise_rec


# The user (SubCategory is nested in the scenario field Category, so it is left out).
INSTANCE_FIELDS = ('User_ID',)


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' or 'instance' (default.DEFAULT_GENERATOR_MODE)."""
  config = default.get_config()
  config.data = scenario_wise_rec.mind_config()
  return default.with_generator_mode(config, mode, INSTANCE_FIELDS)

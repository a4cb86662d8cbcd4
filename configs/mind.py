"""A model on MIND in Scenario-Wise-Rec's form (scenario = news Category; label = click).

  python train.py --config configs/mind.py \
      --config.data.manual_dir=../shared/data/Scenario-Wise-Rec --workdir runs/mind
The one file is split 80/10/10 at random (deterministic by config.data.seed). Data keys:
midpg_jax/data/scenario_wise_rec.py.
"""

from configs import default
from midpg_jax.data import scenario_wise_rec


def get_config():
  config = default.get_config()
  config.data = scenario_wise_rec.mind_config()
  return config

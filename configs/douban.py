"""A model on Douban in Scenario-Wise-Rec's form (scenario = domain; label = rating > 3).

  python train.py --config configs/douban.py \
      --config.data.manual_dir=../shared/data/Scenario-Wise-Rec --workdir runs/douban
The one file is split 80/10/10 at random (deterministic by config.data.seed). Data keys:
midpg_jax/data/scenario_wise_rec.py.
"""

from configs import default
from midpg_jax.data import scenario_wise_rec


def get_config():
  config = default.get_config()
  config.data = scenario_wise_rec.douban_config()
  return config

"""A learning curve on a prepared real-format dataset: MI-DPG and three baselines trained on the
first 1M, 5M and 20M training rows of Ali-CCP (entire space), with the wall time of every run.

  python -m midpg_jax.compare --config configs/bench/aliccp_curve.py \
      --config.base.data.manual_dir=<folder with the ali_ccp_{train,val,test}*.csv files>

The dataset is prepared once (memory-mapped columns, midpg_jax/data/prepare.py); each size is a
view of the first N rows of the training split, so the validation and test splits are the same at
every size. No tuning grid (each model at the base setting) and no full-size seeds: only the curve.
"""

import ml_collections

from configs import aliccp
from configs.bench import synthetic


def get_config() -> ml_collections.ConfigDict:
  b = synthetic.get_config()
  b.title = 'learning curve on Ali-CCP (entire space)'
  b.base = aliccp.get_config()
  b.base.data.clicked_only = False
  b.base.data.progress = False
  b.base.train.batch_size = 4096
  b.base.train.eval_every_steps = 0
  b.models = ('midpg', 'mmoe', 'sar_net', 'star')
  b.grid = None
  b.seeds = ()
  b.bootstrap = None
  b.heterogeneity_sweep = ()
  b.learning_curve.sizes = (1_000_000, 5_000_000, 20_000_000)
  b.learning_curve.models = ('midpg', 'mmoe', 'sar_net', 'star')
  b.output_dir = 'runs/compare_aliccp_curve'
  return b

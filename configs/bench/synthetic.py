"""The default benchmark: every model of the zoo on the built-in data, 3 seeds, plus a sweep of
the scenario heterogeneity.

  python -m midpg_jax.benchmark --config configs/bench/synthetic.py
  python -m midpg_jax.benchmark --config configs/bench/synthetic.py \
      --config.models="('shared_bottom','star','midpg')" --config.seeds="(0,)"

The base training config is configs/default.py scaled to fit the whole benchmark into well under
an hour on 2 CPU cores; every model gets the same data, backbone widths, optimizer and budget.
"""

import ml_collections

from configs import default

MODELS = ('shared_bottom', 'mmoe', 'ple', 'star', 'sar_net', 'm2m', 'adasparse', 'pepnet', 'apg',
          'hamur', 'hmoe', 'midpg')


def base_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.num_train = 200_000
  c.data.num_val = 50_000
  c.data.num_test = 50_000
  c.train.num_epochs = 2
  c.train.eval_every_steps = 65  # ~3 evaluations per epoch: the best point is not missed
  c.train.early_stop_patience = 3
  return c


def get_config() -> ml_collections.ConfigDict:
  b = ml_collections.ConfigDict()
  b.title = 'multi-scenario zoo on the built-in synthetic data'
  b.base = base_config()
  b.models = MODELS
  b.seeds = (0, 1, 2)
  b.variants = ml_collections.ConfigDict()  # name -> ((config.path, value), ...); ablation.py
  b.heterogeneity_sweep = (0.0, 1.0, 2.0)
  b.sweep_models = ('shared_bottom', 'star', 'midpg')
  b.sweep_seeds = (0,)
  b.output_dir = 'runs/bench_synthetic'
  return b

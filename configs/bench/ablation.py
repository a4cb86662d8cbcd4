"""MI-DPG ablations on the built-in data: without MI, the MI estimators compared, without the
shared or the per-scenario factors, APG-style replacement instead of modulation, a rank sweep.

  python -m midpg_jax.benchmark --config configs/bench/ablation.py
"""

import ml_collections

from configs.bench import synthetic


def get_config() -> ml_collections.ConfigDict:
  b = synthetic.get_config()
  b.title = 'MI-DPG ablations on the built-in synthetic data'
  b.models = ('shared_bottom', 'midpg')
  v = {
      'midpg_no_mi': {'model.mi_estimator': 'none'},
      'midpg_jsd': {'model.mi_estimator': 'jsd'},
      'midpg_mine': {'model.mi_estimator': 'mine'},
      'midpg_mi_weight_x10': {'model.mi_weight': 0.1},
      'midpg_no_shared': {'model.use_shared': False},
      'midpg_no_specific': {'model.use_specific': False},
      'midpg_replace': {'model.combine': 'replace'},
  }
  for r in (1, 2, 8, 16):
    v[f'midpg_rank{r}'] = {'model.rank': r, 'model.specific_rank': r}
  # name -> ((config path, value), ...): config paths have dots, which ConfigDict keys cannot.
  b.variants = ml_collections.ConfigDict(
      {k: tuple({'model.name': 'midpg', **o}.items()) for k, o in v.items()})
  b.seeds = (0, 1)
  b.heterogeneity_sweep = ()
  b.output_dir = 'runs/bench_ablation'
  return b

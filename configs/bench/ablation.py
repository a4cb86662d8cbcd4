"""MI-DPG's ablations on the built-in data, 3 seeds each: without MI, without the shared or the
per-scenario factors, scenario-only vs instance-aware generation, APG-style replacement instead of
modulation, rank 4 / 8 / 16.

  python -m midpg_jax.compare --config configs/bench/ablation.py

No grid: every variant trains at MI-DPG's base setting (`base.train`), so the variants differ in
one switch each; the bootstrap gives MI-DPG minus each variant on the same test rows.
"""

import ml_collections

from configs.bench import synthetic


def get_config() -> ml_collections.ConfigDict:
  b = synthetic.get_config()
  b.title = 'MI-DPG ablations on the built-in synthetic data'
  b.models = ('midpg',)  # rank 4, scenario-only generator, modulate, InfoNCE
  v = {
      'midpg_no_mi': {'model.midpg.mi_estimator': 'none'},
      'midpg_no_shared': {'model.midpg.use_shared': False},
      'midpg_no_specific': {'model.midpg.use_specific': False},
      # The generator also sees user / context fields: the low-cardinality ones of the data.
      'midpg_instance_aware': {'model.midpg.generator_features': ('c4', 'c5', 'c6', 'c7')},
      'midpg_replace': {'model.midpg.combine': 'replace'},
      'midpg_rank8': {'model.midpg.rank': 8, 'model.midpg.specific_rank': 8},
      'midpg_rank16': {'model.midpg.rank': 16, 'model.midpg.specific_rank': 16},
  }
  # name -> ((config path, value), ...): config paths have dots, which ConfigDict keys cannot.
  b.variants = ml_collections.ConfigDict(
      {k: tuple({'model.name': 'midpg', **o}.items()) for k, o in v.items()})
  b.grid = None
  b.seeds = (0, 1, 2)
  b.heterogeneity_sweep = ()
  b.learning_curve = None
  b.output_dir = 'runs/compare_ablation'
  return b

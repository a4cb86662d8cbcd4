"""What the MI term's weight does: MI-DPG at lambda (model.midpg.mi_weight) 0, 0.01 (the default), 0.1
and 1.0, 2 seeds, AUC and the per-layer diversity of the weighting matrices.

  python -m midpg_jax.compare --config configs/bench/mi_weight.py

lambda = 0 is the ablation's `midpg_no_mi` (no MI term: the same training as a zero weight) and
0.01 its `midpg`: the same configs, so the runs are shared with configs/bench/ablation.py through
the same output folder's runs.csv.
"""

import ml_collections

from configs.bench import ablation


def get_config() -> ml_collections.ConfigDict:
  b = ablation.get_config()
  b.title = 'MI-DPG by the weight of its MI term (lambda) on the built-in synthetic data'
  kept = ('midpg_no_mi',)
  variants = {k: v for k, v in b.variants.items() if k in kept}
  for name, weight in (('midpg_mi_0p1', 0.1), ('midpg_mi_1', 1.0)):
    variants[name] = (('model.name', 'midpg'), ('model.midpg.mi_weight', weight))
  b.variants = ml_collections.ConfigDict(variants)
  b.seeds = (0, 1)
  return b

"""The comparison of configs/bench/synthetic.py cut to fit about an hour of a shared 2-core
machine: every model of the zoo at the base training setting (no learning-rate x weight-decay
grid), 2 seeds, the paired bootstrap; no heterogeneity sweep, no learning curve.

  python -m midpg_jax.compare --config configs/bench/synthetic_quick.py

Its runs are the grid-free runs of the full comparison's config: what is measured here is each
model untuned at the shared default (one pass, lr 8e-3 decaying linearly, wd 0, embedding L2 0.1).
"""

import ml_collections

from configs.bench import synthetic


def get_config() -> ml_collections.ConfigDict:
  b = synthetic.get_config()
  b.title = 'multi-scenario zoo on the built-in synthetic data (untuned, 2 seeds)'
  b.grid = None
  b.seeds = (0, 1)
  b.heterogeneity_sweep = ()
  b.learning_curve = None
  b.output_dir = 'runs/compare_synthetic_quick'
  return b

"""The comparisons' configs: `get_config(name)` for each of `COMPARISONS` (default 'synthetic').

This file is the default --config of `midpg-compare`; a name picks another comparison
(`--config <this file>:ablation`), and each file of the checkout's configs/bench/ is a few lines
calling one of the builders below, so `--config configs/bench/ablation.py` works from any folder.

  midpg-compare                                            # the zoo on the built-in data, tuned
  midpg-compare --config configs/bench/ablation.py         # MI-DPG's ablations
  midpg-compare --config.models="('mmoe','star','midpg')" --config.seeds="(0,)" \
      --config.output_dir=runs/c
"""

from __future__ import annotations

import ml_collections

from midpg_jax import config as run_configs
from midpg_jax.errors import ConfigError

MODELS = ('midpg', 'logistic', 'mlp', 'shared_bottom', 'mmoe', 'ple', 'star', 'sar_net', 'm2m',
          'adasparse', 'epnet', 'ppnet', 'pepnet', 'apg', 'hamur', 'hmoe')


def base_config() -> ml_collections.ConfigDict:
  """The training config every model of the comparison gets: the default (one pass with a
  decaying learning rate, docs/training.md) at 200k training rows."""
  c = run_configs.get_config()
  c.data.num_train = 200_000
  c.data.num_val = 50_000
  c.data.num_test = 50_000
  # One validation, at the end of the single pass: the learning rate decays linearly to 0 there,
  # where every model peaks (docs/training.md); evaluations inside the pass cost a fifth of a run
  # each and chose the last point anyway.
  c.train.eval_every_steps = 0
  return c


def synthetic() -> ml_collections.ConfigDict:
  """Every model of the zoo on the built-in data, tuned on validation.

  Per model: a learning-rate x weight-decay grid chosen on validation (seed `grid_seed`), then
  `seeds` runs at the chosen point; a paired bootstrap of MI-DPG minus each model on the test rows;
  a heterogeneity sweep; a learning curve at three training sizes for MI-DPG and the three models
  strongest on validation. Every model gets the same data, backbone widths, optimizer family and
  budget.
  """
  b = ml_collections.ConfigDict()
  b.title = 'multi-scenario zoo on the built-in synthetic data'
  b.base = base_config()
  b.models = MODELS
  b.variants = ml_collections.ConfigDict()  # name -> ((config.path, value), ...); ablation()
  # Tuned per model on validation; the grid's seed is also the first of `seeds` (reused).
  # Steps of 3x from 4e-3 to 3.6e-2: in the study MI-DPG was still improving at 3.2e-2 and SAR-Net
  # peaked at 8e-3. The grid points share one compiled train step (the rate and the decay are
  # values of the optimizer state), so each point costs its steps, not a compile.
  # AdamW's decoupled decay multiplies the weights by (1 - lr_t * wd) per step: over one pass
  # (~195 steps, rate decaying linearly) wd 0.1 changed nothing measurable (mlp: val AUC 0.7525
  # vs 0.7526); wd 0.5 shrinks them by exp(-wd * sum of lr_t) = 0.82 / 0.56 / 0.17 at the 3 rates.
  b.grid = ml_collections.ConfigDict({'learning_rate': (4e-3, 1.2e-2, 3.6e-2),
                                      'weight_decay': (0.0, 0.5)})
  b.grid_seed = 0
  b.seeds = (0, 1, 2)
  b.bootstrap = ml_collections.ConfigDict({'reference': 'midpg', 'samples': 1000, 'seed': 0})
  b.heterogeneity_sweep = (0.0, 1.0, 2.0)  # the h = 1.0 point is the main runs (reused)
  b.sweep_models = ('shared_bottom', 'star', 'midpg')
  b.sweep_seeds = (0,)
  # models () = the bootstrap reference and the `num_others` other models best on validation.
  # 50k / 200k / 800k rows (the first N of one 800k-row draw), 4x apart, sized for a 2-core
  # machine (MI-DPG at 1M / 5M / 20M rows: aliccp_curve()).
  b.learning_curve = ml_collections.ConfigDict({
      'sizes': (50_000, 200_000, 800_000), 'models': (), 'num_others': 3, 'seeds': (0,)})
  b.output_dir = 'runs/compare_synthetic'
  # JAX's persistent compilation cache, shared by every comparison: a run that compiles a program
  # already compiled (another seed, the test scoring) reads it back. '' = off.
  b.compilation_cache_dir = 'runs/jax_cache'
  return b


def synthetic_quick() -> ml_collections.ConfigDict:
  """synthetic() cut to about an hour of a 2-core machine: every model at the base training
  setting (no grid: each model untuned at the shared default), 2 seeds, the paired bootstrap; no
  heterogeneity sweep, no learning curve."""
  b = synthetic()
  b.title = 'multi-scenario zoo on the built-in synthetic data (untuned, 2 seeds)'
  b.grid = None
  b.seeds = (0, 1)
  b.heterogeneity_sweep = ()
  b.learning_curve = None
  b.output_dir = 'runs/compare_synthetic_quick'
  return b


def ablation() -> ml_collections.ConfigDict:
  """MI-DPG's ablations on the built-in data, 3 seeds each: without MI, without the shared or the
  per-scenario factors, scenario-only vs instance-aware generation, APG-style replacement instead
  of modulation, rank 4 / 8 / 16. No grid: every variant trains at MI-DPG's base setting, so the
  variants differ in one switch each; the bootstrap gives MI-DPG minus each variant."""
  b = synthetic()
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


def mi_weight() -> ml_collections.ConfigDict:
  """MI-DPG at lambda (model.midpg.mi_weight) 0, 0.01 (the default), 0.1 and 1.0, 2 seeds. lambda
  = 0 and 0.01 are the ablation's `midpg_no_mi` and `midpg`: the same configs in the same output
  folder, so those runs are shared with ablation()."""
  b = ablation()
  b.title = 'MI-DPG by the weight of its MI term (lambda) on the built-in synthetic data'
  variants = {k: v for k, v in b.variants.items() if k == 'midpg_no_mi'}
  for name, weight in (('midpg_mi_0p1', 0.1), ('midpg_mi_1', 1.0)):
    variants[name] = (('model.name', 'midpg'), ('model.midpg.mi_weight', weight))
  b.variants = ml_collections.ConfigDict(variants)
  b.seeds = (0, 1)
  return b


def replace_tuned() -> ml_collections.ConfigDict:
  """MI-DPG against its APG-style variant (`combine='replace'`), each tuned on the zoo's grid
  (the ablation trains every variant at one rate). It shares the zoo's output folder, so MI-DPG's
  grid and seeds are read back, not trained again."""
  b = synthetic()
  b.title = 'MI-DPG: modulate vs replace, each tuned'
  b.models = ('midpg',)
  b.variants = ml_collections.ConfigDict(
      {'midpg_replace': (('model.name', 'midpg'), ('model.midpg.combine', 'replace'))})
  b.heterogeneity_sweep = ()
  b.learning_curve = None
  return b


def aliccp_curve() -> ml_collections.ConfigDict:
  """A learning curve on Ali-CCP (entire space, prepared once): MI-DPG and three baselines on the
  first 1M, 5M and 20M training rows (each size a view of the memory-mapped training split, so
  validation and test are the same at every size), with the wall time of every run. No grid, no
  full-size seeds: only the curve. Needs --config.base.data.manual_dir=<Ali-CCP folder>."""
  b = synthetic()
  b.title = 'learning curve on Ali-CCP (entire space)'
  b.base = run_configs.get_config(dataset='aliccp')
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


COMPARISONS = {f.__name__: f for f in (synthetic, synthetic_quick, ablation, mi_weight,
                                       replace_tuned, aliccp_curve)}


def get_config(name: str | None = None) -> ml_collections.ConfigDict:
  """The comparison `name` (default 'synthetic'), as `--config <this file>:<name>` gives it."""
  name = name or 'synthetic'
  if name not in COMPARISONS:
    raise ConfigError(f'unknown comparison {name!r}; known: {sorted(COMPARISONS)}')
  return COMPARISONS[name]()

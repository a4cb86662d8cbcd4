"""A fair, tuned model comparison in one command.

  python -m midpg_jax.compare --config configs/bench/synthetic.py   # the zoo on the built-in data
  python -m midpg_jax.compare --config configs/bench/ablation.py    # MI-DPG's ablations
  python -m midpg_jax.compare --config configs/bench/aliccp_curve.py  # a prepared dataset by size

For every model (or MI-DPG variant), with the same trainer, data and backbone sizes:
1. tuning: a learning-rate x weight-decay grid (`grid`), one run each at seed `grid_seed`; the
   point with the best VALIDATION AUC is the model's setting (the test split is never used to
   choose);
2. `seeds` runs at that setting: test AUC, logloss, calibration (and the gap to the oracle on the
   built-in data), per scenario, as mean ± std;
3. a paired bootstrap of `bootstrap.reference` minus each model on the same test rows, from the
   runs' saved test predictions;
4. optionally a heterogeneity sweep (built-in data) and a learning curve over training-set sizes
   (the first N training rows; on a prepared dataset a view of the memory-mapped split), with the
   wall time of each run.

Written into `output_dir`: runs.csv (every finished run, keyed by its config's fingerprint; see
plan.py), results.csv (the final runs), tuning.csv, bootstrap.csv, heterogeneity.csv,
learning_curve.csv, results.md (every table), scenario_auc.png, heterogeneity.png,
learning_curve.png, and per run `runs/<model>/<fingerprint>/` with its checkpoints, train.log
(what the trainer printed) and test_predictions.npy (float32, exactly as predicted). A rerun
trains only the runs whose config is not yet in runs.csv.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import time

import numpy as np

from midpg_jax import evaluation, trainer
from midpg_jax.compare import report
from midpg_jax.compare.plan import RunStore, data_name, fingerprint, variant_config, variants
from midpg_jax.errors import ConfigError

_METRICS = ('auc', 'logloss', 'calibration', 'auc_gap', 'oracle_auc')


def _grid(cmp_cfg) -> list[tuple[float, float]]:
  grid = cmp_cfg.get('grid', None)
  if not grid:
    return []  # no tuning: the base config's optimizer setting
  return list(itertools.product(grid.learning_rate, grid.weight_decay))


def _check(cmp_cfg, spec) -> None:
  """Every name and key of the comparison, before anything trains (one ConfigError line)."""
  from midpg_jax.models import build_model, model_names
  names = [n for n, _ in variants(cmp_cfg)]
  for name, overrides in variants(cmp_cfg):
    for lr, wd in _grid(cmp_cfg) or [(None, None)]:
      cfg = variant_config(cmp_cfg, name, overrides, 0, learning_rate=lr, weight_decay=wd)
    if cfg.model.name not in model_names():
      raise ConfigError(f'compare: unknown model {cfg.model.name!r} (in {name!r}); known: '
                        f'{", ".join(model_names())}')
    build_model(cfg.model, spec)  # a bad model value fails here, not after other models trained
  for key in ('sweep_models',):
    unknown = set(cmp_cfg.get(key, ())) - set(names)
    if unknown and cmp_cfg.get('heterogeneity_sweep', ()):
      raise ConfigError(f'compare.{key} names {sorted(unknown)}, not among the compared {names}')
  curve = cmp_cfg.get('learning_curve', None)
  if curve and curve.sizes and curve.models:
    unknown = set(curve.models) - set(names)
    if unknown:
      raise ConfigError(f'compare.learning_curve.models names {sorted(unknown)}, not among the '
                        f'compared {names}')
  ref = cmp_cfg.bootstrap.reference if cmp_cfg.get('bootstrap', None) else None
  if ref and ref not in names:
    raise ConfigError(f'compare.bootstrap.reference {ref!r} is not among the compared {names}')
  if cmp_cfg.get('heterogeneity_sweep', ()) and data_name(cmp_cfg.base.data) != 'synthetic':
    raise ConfigError('compare.heterogeneity_sweep needs the synthetic dataset')


class _Runner:
  """Trains a run unless runs.csv already has its fingerprint; returns its row."""

  def __init__(self, cmp_cfg, out_dir, scenario_names):
    self.cmp, self.out_dir, self.scenario_names = cmp_cfg, out_dir, scenario_names
    self.store = RunStore(os.path.join(out_dir, 'runs.csv'))
    self.trained = 0

  def __call__(self, name, cfg, **info) -> dict:
    fp = fingerprint(cfg)
    row = self.store.get(fp)
    if row is not None:
      return row
    workdir = os.path.join(self.out_dir, 'runs', name, fp)
    os.makedirs(workdir, exist_ok=True)
    started = time.perf_counter()
    # The trainer's own printout (its sharding table, validation lines) goes to the run's log,
    # not between the comparison's lines.
    with open(os.path.join(workdir, 'train.log'), 'a') as log, contextlib.redirect_stdout(log):
      summary = trainer.train_and_evaluate(cfg, workdir)
      test, probs, _, _ = evaluation.evaluate_checkpoint(cfg, workdir, 'test')
    np.save(os.path.join(workdir, 'test_predictions.npy'), probs.astype(np.float32))
    diagnostics = _diagnostics_at(workdir, summary['best_step'])
    row = {'fingerprint': fp, 'model': name, 'seed': int(cfg.seed),
           'learning_rate': float(cfg.train.learning_rate),
           'weight_decay': float(cfg.train.weight_decay), **info,
           'params': summary['params'], 'best_step': summary['best_step'],
           'steps': summary['steps'], 'train_examples_per_s': summary['train_examples_per_s'],
           'wall_s': round(time.perf_counter() - started, 1),
           'val/auc': summary['validation']['overall']['auc'], **diagnostics, 'workdir': workdir}
    for group in ['overall', *self.scenario_names]:
      for k in _METRICS:
        row[f'{group}/{k}'] = test.get(group, {}).get(k, float('nan'))
    self.store.add(row)
    self.trained += 1
    print(f'{name} seed {cfg.seed} lr {cfg.train.learning_rate:g} wd '
          f'{cfg.train.weight_decay:g}' + ''.join(f' {k} {v}' for k, v in info.items()) +
          f': val AUC {row["val/auc"]:.4f}, test AUC {row["overall/auc"]:.4f} '
          f'({row["wall_s"]:.0f} s)', flush=True)
    return self.store.get(fp)


def _diagnostics_at(workdir: str, step: int) -> dict:
  """The model's logged diagnostics (MI-DPG: train/mi_bound, train/diversity_l<l>) at the
  validation evaluation of `step` (the best checkpoint's), from the run's metrics.jsonl."""
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      if row.get('split') == 'validation' and row.get('step') == step:
        out = {k: v for k, v in row.items()
               if k.startswith(('train/diversity_l', 'train/mi_bound'))}
  return out


@contextlib.contextmanager
def _dataset_memo():
  """Within it, every run of the comparison builds on one generated or loaded copy per data
  config instead of generating the data again (the trainer and the test scoring each load it):
  the loaders are deterministic in their config, so no number changes."""
  from midpg_jax import build
  load, cache = build.load_dataset, {}

  def memo_load(data_cfg):
    key = json.dumps(data_cfg.to_dict(), sort_keys=True, default=str)
    if key not in cache:
      cache[key] = load(data_cfg)
    return cache[key]

  build.load_dataset = memo_load
  try:
    yield memo_load
  finally:
    build.load_dataset = load


def enable_compilation_cache(directory: str) -> None:
  """JAX's persistent compilation cache in `directory`, for every compile (min time 0): the runs
  of a comparison that compile the same program (another seed, the final test scoring of the
  same model) read it back instead of compiling again. Changes no number."""
  import jax
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)


def _write_csv(path, rows) -> None:
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields, restval='')
    writer.writeheader()
    writer.writerows(rows)


def run(cmp_cfg) -> dict:
  """Runs the comparison `cmp_cfg` (configs/bench/*.py); returns {'summary', 'rows', 'markdown',
  'chosen', 'bootstrap'}."""
  out_dir = str(cmp_cfg.output_dir)
  cache_dir = cmp_cfg.get('compilation_cache_dir', None)
  if cache_dir:
    enable_compilation_cache(str(cache_dir))
  with _dataset_memo() as load_dataset:
    return _run(cmp_cfg, out_dir, load_dataset(cmp_cfg.base.data))


def _run(cmp_cfg, out_dir, dataset) -> dict:
  scenario_names = list(dataset.spec.scenario_names)
  _check(cmp_cfg, dataset.spec)
  os.makedirs(out_dir, exist_ok=True)
  has_oracle = dataset.has_oracle
  var = variants(cmp_cfg)
  names = [n for n, _ in var]
  runner = _Runner(cmp_cfg, out_dir, scenario_names)
  grid, seeds = _grid(cmp_cfg), [int(s) for s in cmp_cfg.seeds]
  print(f'compare: {len(names)} models x ({len(grid)} grid points + {len(seeds)} seeds) in '
        f'{out_dir}; {len(runner.store.rows)} runs already in runs.csv; each run writes its '
        'log to its folder\'s train.log', flush=True)

  # 1. Tuning on validation (without a grid: the base config's setting, nothing trained).
  chosen, tuning_rows = {}, []
  grid_seed = int(cmp_cfg.get('grid_seed', 0))
  base_train = cmp_cfg.base.train
  for name, overrides in var:
    best = None
    for lr, wd in grid:
      row = runner(name, variant_config(cmp_cfg, name, overrides, grid_seed, learning_rate=lr,
                                        weight_decay=wd))
      tuning_rows.append(row)
      if best is None or report.as_float(row['val/auc']) > report.as_float(best['val/auc']):
        best = row
    chosen[name] = ((float(best['learning_rate']), float(best['weight_decay'])) if best else
                    (float(base_train.learning_rate), float(base_train.weight_decay)))
  final = lambda name, overrides, seed, **kw: variant_config(
      cmp_cfg, name, overrides, seed, learning_rate=chosen[name][0],
      weight_decay=chosen[name][1], **kw)

  # 2. Seeds at the chosen setting.
  rows = [runner(name, final(name, ov, seed)) for name, ov in var for seed in seeds]
  # 3. Heterogeneity sweep: the point at the base heterogeneity is the main runs (same config).
  overrides_of = dict(var)
  sweep_rows = [dict(runner(m, final(m, overrides_of[m], s, heterogeneity=h)), heterogeneity=h)
                for h in cmp_cfg.get('heterogeneity_sweep', ()) for m in cmp_cfg.sweep_models
                for s in cmp_cfg.sweep_seeds]
  # 4. Learning curve: the reference model and the strongest others on validation.
  curve, curve_rows = cmp_cfg.get('learning_curve', None), []
  if curve and curve.sizes:
    if not curve.models and not rows:
      raise ConfigError('compare.learning_curve.models must name the models when there are no '
                        'seeds to pick the strongest from')
    reference = cmp_cfg.bootstrap.reference if cmp_cfg.get('bootstrap', None) else None
    curve_models = list(curve.models) if curve.models else _strongest(
        rows, reference, int(curve.get('num_others', 3)))
    largest = max(int(n) for n in curve.sizes)
    curve_rows = [dict(runner(m, final(m, overrides_of[m], s, train_rows=n, source_rows=largest),
                              train_rows=n), train_rows=n)
                  for n in curve.sizes for m in curve_models for s in curve.seeds]

  summary = report.summarise(rows, [f'{g}/{k}' for g in ['overall', *scenario_names]
                                    for k in _METRICS] + ['params', 'train_examples_per_s',
                                                          'val/auc', 'wall_s'] + _diag_keys(rows))
  colors = report.model_colors(names)
  boot = _bootstrap(cmp_cfg, rows, dataset.splits['test']['label']) if rows else {}
  markdown = _markdown(cmp_cfg, summary, scenario_names, has_oracle, chosen, tuning_rows, boot,
                       sweep_rows, curve_rows)
  _write_csv(os.path.join(out_dir, 'results.csv'), rows)
  _write_csv(os.path.join(out_dir, 'tuning.csv'), tuning_rows)
  for fname, part in (('heterogeneity.csv', sweep_rows), ('learning_curve.csv', curve_rows)):
    if part:
      _write_csv(os.path.join(out_dir, fname), part)
  if boot:
    _write_csv(os.path.join(out_dir, 'bootstrap.csv'), [{'model': m, **r} for m, r in boot.items()])
  with open(os.path.join(out_dir, 'results.md'), 'w') as f:
    f.write(markdown)
  if summary:
    report.save(report.scenario_figure(summary, scenario_names, colors),
                os.path.join(out_dir, 'scenario_auc.png'))
  if sweep_rows:
    report.save(report.line_figure(
        sweep_rows, 'heterogeneity', 'overall/auc_gap', colors,
        'scenario heterogeneity (data.heterogeneity)', 'oracle AUC - model AUC',
        'Gap to the oracle as scenarios differ more (lower is better)'),
        os.path.join(out_dir, 'heterogeneity.png'))
  if curve_rows:
    report.save(report.line_figure(curve_rows, 'train_rows', 'overall/auc', colors,
                                   'training rows', 'test AUC', 'Test AUC by training-set size',
                                   log_x=True), os.path.join(out_dir, 'learning_curve.png'))
  return {'summary': summary, 'rows': rows, 'markdown': markdown, 'chosen': chosen,
          'bootstrap': boot, 'trained': runner.trained}


def _diag_keys(rows) -> list[str]:
  """The diagnostics columns the runs carry (MI-DPG's per-layer diversity, MI bound), sorted."""
  return sorted({k for r in rows for k, v in r.items()
                 if k.startswith('train/') and v not in ('', None)})


def _strongest(rows, reference, k) -> list[str]:
  """The reference and the k other models with the best mean validation AUC."""
  val = report.summarise(rows, ['val/auc'])
  others = sorted((m for m in val if m != reference), key=lambda m: -val[m]['val/auc'][0])
  return ([reference] if reference in val else []) + others[:k]


def _bootstrap(cmp_cfg, rows, labels) -> dict:
  cfg = cmp_cfg.get('bootstrap', None)
  if not cfg or not cfg.reference:
    return {}
  preds: dict[str, list] = {}
  for r in rows:
    preds.setdefault(r['model'], []).append(
        np.load(os.path.join(r['workdir'], 'test_predictions.npy')))
  others = {m: p for m, p in preds.items() if m != cfg.reference}
  return report.paired_bootstrap(np.asarray(labels), preds[cfg.reference], others,
                                 int(cfg.samples), int(cfg.get('seed', 0)))


def _markdown(cmp_cfg, summary, scenario_names, has_oracle, chosen, tuning_rows, boot,
              sweep_rows, curve_rows) -> str:
  overall = ['overall/auc', 'overall/logloss', 'overall/calibration'] + (
      ['overall/auc_gap'] if has_oracle else []) + ['params', 'train_examples_per_s', 'wall_s']
  md = [f'# Comparison: {cmp_cfg.title}']
  if summary:
    md += ['', report.markdown_table(summary, overall, 'Overall'), '',
           report.markdown_table(summary, [f'{s}/auc' for s in scenario_names],
                                 'Per-scenario test AUC')]
  diag = sorted({k for s in summary.values() for k in s if k.startswith('train/')})
  if diag:
    with_diag = {m: s for m, s in summary.items()
                 if any(np.isfinite(s.get(k, (np.nan,))[0]) for k in diag)}
    md += ['', report.markdown_table(with_diag, diag, 'At the best checkpoint: MI bound and '
                                     'per-layer diversity of the weighting matrices (train)')]
  if has_oracle and summary:
    oracle = next(iter(summary.values()))['overall/oracle_auc'][0]
    md += ['', f'Oracle test AUC (true probabilities): {oracle:.4f}.']
  if tuning_rows:
    md += ['', '## Tuning (validation AUC, seed of the grid)', '',
           '| model | chosen learning rate | chosen weight decay | grid: (lr, wd) val AUC |',
           '|---|---|---|---|']
    for m, (lr, wd) in chosen.items():
      cells = ', '.join(f'({report.as_float(r["learning_rate"]):g}, '
                        f'{report.as_float(r["weight_decay"]):g}) '
                        f'{report.as_float(r["val/auc"]):.4f}'
                        for r in tuning_rows if r['model'] == m)
      md.append(f'| {m} | {lr:g} | {wd:g} | {cells} |')
  if boot:
    md += ['', report.bootstrap_table(boot, cmp_cfg.bootstrap.reference,
                                      int(cmp_cfg.bootstrap.samples))]
  if sweep_rows:
    hs = list(dict.fromkeys(r['heterogeneity'] for r in sweep_rows))
    md += ['', '## Gap to the oracle by heterogeneity', '',
           '| model | ' + ' | '.join(f'h={h}' for h in hs) + ' |', '|---' * (len(hs) + 1) + '|']
    for m in dict.fromkeys(r['model'] for r in sweep_rows):
      cells = [np.mean([report.as_float(r['overall/auc_gap']) for r in sweep_rows
                        if r['model'] == m and r['heterogeneity'] == h]) for h in hs]
      md.append(f'| {m} | ' + ' | '.join(f'{c:.4f}' for c in cells) + ' |')
  if curve_rows:
    ns = list(dict.fromkeys(r['train_rows'] for r in curve_rows))
    md += ['', '## Learning curve: test AUC (wall seconds per run)', '',
           '| model | ' + ' | '.join(f'{n:,} rows' for n in ns) + ' |',
           '|---' * (len(ns) + 1) + '|']
    for m in dict.fromkeys(r['model'] for r in curve_rows):
      cells = []
      for n in ns:
        rs = [r for r in curve_rows if r['model'] == m and r['train_rows'] == n]
        cells.append(f'{np.mean([report.as_float(r["overall/auc"]) for r in rs]):.4f} '
                     f'({np.mean([report.as_float(r["wall_s"]) for r in rs]):,.0f} s)')
      md.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(md) + '\n'

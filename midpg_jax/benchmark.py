"""Compares models honestly: several seeds, per-scenario metrics, the oracle gap, size and speed.

  python -m midpg_jax.benchmark --config configs/bench/synthetic.py [--config.seeds="(0,1)"]
  python -m midpg_jax.benchmark --config configs/bench/ablation.py

Every (model or variant, seed) is trained with the same trainer, data and backbone sizes and
scored by the one metrics path (`midpg_jax.metrics`) on the test split of its best validation
checkpoint. Written into `config.output_dir`:

  results.csv        one row per (model, seed): overall and per-scenario AUC, logloss,
                     calibration, oracle gap (synthetic data), parameters, training examples/s
  results.md         mean ± std over seeds per model, the best of each column in bold
  scenario_auc.png   per-scenario test AUC by model (mean, error bars = std over seeds)
  heterogeneity.png  AUC gap to the oracle as scenario heterogeneity grows (if a sweep is set)
  heterogeneity.csv  the sweep's rows

A run whose row is already in results.csv is not trained again, so an interrupted benchmark
resumes where it stopped.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time

import numpy as np

from midpg_jax import trainer

# Columns of results.csv, besides the identifying ones; per-scenario columns are added per data.
_OVERALL = ('auc', 'logloss', 'calibration', 'auc_gap', 'oracle_auc')
_PER_SCENARIO = ('auc', 'logloss', 'calibration', 'auc_gap', 'oracle_auc')
# For results.md: which direction is better per metric (None = closest to 1).
_BETTER = {'auc': max, 'logloss': min, 'auc_gap': min, 'calibration': None, 'params': min,
           'train_examples_per_s': max}


def variant_config(bench_cfg, name: str, overrides: dict, seed: int, heterogeneity=None):
  """The training config of one run: the bench's base config with the variant's overrides."""
  cfg = bench_cfg.base.copy_and_resolve_references()
  cfg.unlock()
  cfg.seed = int(seed)
  for key, value in overrides.items():
    node = cfg
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    if leaf not in node:
      raise ValueError(f'benchmark variant {name!r}: unknown config key {key!r}')
    node[leaf] = value
  if heterogeneity is not None:
    cfg.data.heterogeneity = float(heterogeneity)
  cfg.train.progress_bar = False
  return cfg


def variants(bench_cfg) -> list[tuple[str, dict]]:
  """(name, overrides) of every run in this benchmark: models, or MI-DPG ablation variants."""
  out = [(m, {'model.name': m}) for m in bench_cfg.models]
  for name, overrides in bench_cfg.get('variants', {}).items():
    out.append((name, dict(overrides)))
  return out


def _row(name, seed, summary, heterogeneity, scenario_names) -> dict:
  test = summary['test']
  row = {'model': name, 'seed': seed, 'heterogeneity': heterogeneity,
         'params': summary['params'],
         'train_examples_per_s': summary.get('train_examples_per_s', math.nan),
         'best_step': summary['best_step']}
  for k in _OVERALL:
    row[f'overall/{k}'] = test['overall'].get(k, math.nan)
  for s in scenario_names:
    for k in _PER_SCENARIO:
      row[f'{s}/{k}'] = test.get(s, {}).get(k, math.nan)
  return row


def _read_csv(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return list(csv.DictReader(f))


def _append_csv(path, row):
  new = not os.path.exists(path)
  with open(path, 'a', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(row))
    if new:
      w.writeheader()
    w.writerow(row)


def _as_float(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return math.nan


def summarise(rows: list[dict], columns: list[str]) -> dict[str, dict[str, tuple]]:
  """{model: {column: (mean, std, n)}} over seeds, in first-seen model order."""
  by_model: dict[str, list[dict]] = {}
  for r in rows:
    by_model.setdefault(r['model'], []).append(r)
  out = {}
  for model, rs in by_model.items():
    out[model] = {}
    for c in columns:
      vals = np.array([_as_float(r[c]) for r in rs])
      vals = vals[~np.isnan(vals)]
      out[model][c] = ((float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                        len(vals)) if len(vals) else (math.nan, math.nan, 0))
  return out


def markdown_table(summary: dict, columns: list[str], title: str) -> str:
  def best_of(col):
    metric = col.split('/')[-1]
    vals = {m: s[col][0] for m, s in summary.items() if not math.isnan(s[col][0])}
    if not vals or metric not in _BETTER:
      return None
    rule = _BETTER[metric]
    if rule is None:
      return min(vals, key=lambda m: abs(vals[m] - 1))
    return rule(vals, key=vals.get)

  best = {c: best_of(c) for c in columns}
  lines = [f'## {title}', '', '| model | ' + ' | '.join(columns) + ' |',
           '|---' * (len(columns) + 1) + '|']
  for model, stats in summary.items():
    cells = []
    for c in columns:
      mean, std, n = stats[c]
      if math.isnan(mean):
        cell = 'undef'
      elif c == 'params':
        cell = f'{mean:,.0f}'
      elif c == 'train_examples_per_s':
        cell = f'{mean:,.0f} ± {std:,.0f}'
      else:
        cell = f'{mean:.4f} ± {std:.4f}'
      cells.append(f'**{cell}**' if best[c] == model else cell)
    lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
  n_seeds = max((s[columns[0]][2] for s in summary.values()), default=0)
  lines += ['', f'Mean ± std over {n_seeds} seeds on the test split (best validation '
            'checkpoint); bold = best of the column (calibration: closest to 1).']
  return '\n'.join(lines)


def _plot_scenarios(summary, scenario_names, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  models = list(summary)
  groups = list(scenario_names) + ['overall']
  x = np.arange(len(groups))
  width = 0.8 / max(len(models), 1)
  fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups) + 0.3 * len(models)), 4.5))
  colors = plt.cm.tab20(np.arange(len(models)) % 20)  # tab10 repeats colours past 10 models
  for i, m in enumerate(models):
    means = [summary[m][f'{g}/auc'][0] for g in groups]
    stds = [summary[m][f'{g}/auc'][1] for g in groups]
    ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=stds, label=m, capsize=2,
           color=colors[i])
  oracle = [summary[models[0]].get(f'{g}/oracle_auc', (math.nan,))[0] for g in groups]
  if not all(math.isnan(o) for o in oracle):
    ax.scatter(x, oracle, marker='_', s=2000 * 0.8, color='black', zorder=3, label='oracle')
  lo = np.nanmin([summary[m][f'{g}/auc'][0] for m in models for g in groups])
  ax.set_ylim(max(0.5, lo - 0.03), None)
  ax.set_xticks(x, groups)
  ax.set_ylabel('test AUC')
  ax.set_title('Per-scenario AUC by model (mean ± std over seeds)')
  ax.legend(fontsize=7, ncol=2, loc='upper left', bbox_to_anchor=(1, 1))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_heterogeneity(rows, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  models = list(dict.fromkeys(r['model'] for r in rows))
  for m in models:
    pts: dict[float, list] = {}
    for r in rows:
      if r['model'] == m:
        pts.setdefault(_as_float(r['heterogeneity']), []).append(_as_float(r['overall/auc_gap']))
    hs = sorted(pts)
    means = [np.mean(pts[h]) for h in hs]
    stds = [np.std(pts[h]) for h in hs]
    ax.errorbar(hs, means, yerr=stds, marker='o', capsize=3, label=m)
  ax.set_xlabel('scenario heterogeneity (data.heterogeneity)')
  ax.set_ylabel('oracle AUC - model AUC (test)')
  ax.set_title('Gap to the oracle as scenarios differ more (lower is better)')
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(bench_cfg) -> dict:
  """Runs the benchmark described by `bench_cfg`; returns {'summary', 'rows', 'markdown'}."""
  out_dir = str(bench_cfg.output_dir)
  os.makedirs(out_dir, exist_ok=True)
  from midpg_jax.data import load_dataset  # the scenario names of the data
  scenario_names = list(load_dataset(bench_cfg.base.data).spec.scenario_names)
  has_oracle = bench_cfg.base.data.name == 'synthetic'
  runs = [(name, ov, seed, None) for name, ov in variants(bench_cfg) for seed in bench_cfg.seeds]
  sweep = list(bench_cfg.get('heterogeneity_sweep', ()))
  if sweep and not has_oracle:
    raise ValueError('benchmark.heterogeneity_sweep needs the synthetic dataset')
  runs += [(m, {'model.name': m}, seed, h) for h in sweep for m in bench_cfg.sweep_models
           for seed in bench_cfg.sweep_seeds]
  results_csv = os.path.join(out_dir, 'results.csv')
  sweep_csv = os.path.join(out_dir, 'heterogeneity.csv')
  done = {(r['model'], str(r['seed'])) for r in _read_csv(results_csv)}
  done |= {(r['model'], str(r['seed']), str(float(r['heterogeneity'])))
           for r in _read_csv(sweep_csv)}
  from tqdm.auto import tqdm
  bar = tqdm(runs, desc='benchmark', unit='run', dynamic_ncols=True)
  for name, overrides, seed, h in bar:
    key = (name, str(seed)) if h is None else (name, str(seed), str(float(h)))
    if key in done:
      continue
    bar.set_postfix(run=f'{name} seed={seed}' + ('' if h is None else f' h={h}'))
    cfg = variant_config(bench_cfg, name, overrides, seed, h)
    workdir = os.path.join(out_dir, 'runs', name + ('' if h is None else f'_h{h}'), f'seed{seed}')
    started = time.perf_counter()
    summary = trainer.train_and_evaluate(cfg, workdir)
    row = _row(name, seed, summary, cfg.data.heterogeneity, scenario_names)
    row['wall_s'] = round(time.perf_counter() - started, 1)
    _append_csv(results_csv if h is None else sweep_csv, row)
    bar.write(f'{name} seed {seed}' + ('' if h is None else f' heterogeneity {h}') +
              f': test AUC {row["overall/auc"]:.4f}' +
              (f', gap to oracle {row["overall/auc_gap"]:.4f}' if has_oracle else ''))
  bar.close()

  rows = _read_csv(results_csv)
  names = [n for n, _ in variants(bench_cfg)]
  rows = [r for r in rows if r['model'] in names]
  rows.sort(key=lambda r: names.index(r['model']))
  overall_cols = ['overall/auc', 'overall/logloss', 'overall/calibration']
  if has_oracle:
    overall_cols.append('overall/auc_gap')
  overall_cols += ['params', 'train_examples_per_s']
  scen_cols = [f'{s}/auc' for s in scenario_names]
  all_cols = overall_cols + scen_cols + [f'{g}/{k}' for g in scenario_names for k in
                                         ('logloss', 'calibration')] + (
      [f'{g}/oracle_auc' for g in ['overall']] if has_oracle else [])
  summary = summarise(rows, all_cols + ([f'{s}/{k}' for s in scenario_names
                                         for k in ('auc_gap', 'oracle_auc')]
                                        if has_oracle else []))
  md = [f'# Benchmark: {bench_cfg.title}', '',
        markdown_table(summary, overall_cols, 'Overall'), '',
        markdown_table(summary, scen_cols, 'Per-scenario test AUC')]
  if has_oracle:
    oracle = summary[next(iter(summary))]['overall/oracle_auc'][0] if summary else math.nan
    md += ['', f'Oracle test AUC (true probabilities): {oracle:.4f}.']
  if os.path.exists(sweep_csv):
    srows = _read_csv(sweep_csv)
    _plot_heterogeneity(srows, os.path.join(out_dir, 'heterogeneity.png'))
    md += ['', '## Gap to the oracle by heterogeneity', '', '| model | ' +
           ' | '.join(f'h={h}' for h in sweep) + ' |', '|---' * (len(sweep) + 1) + '|']
    for m in bench_cfg.sweep_models:
      cells = []
      for h in sweep:
        v = [_as_float(r['overall/auc_gap']) for r in srows
             if r['model'] == m and _as_float(r['heterogeneity']) == float(h)]
        cells.append(f'{np.mean(v):.4f}' if v else '-')
      md.append(f'| {m} | ' + ' | '.join(cells) + ' |')
  markdown = '\n'.join(md) + '\n'
  with open(os.path.join(out_dir, 'results.md'), 'w') as f:
    f.write(markdown)
  if summary:
    _plot_scenarios(summary, scenario_names, os.path.join(out_dir, 'scenario_auc.png'))
  return {'summary': summary, 'rows': rows, 'markdown': markdown}


def main(argv=None):
  from absl import app, flags, logging
  from ml_collections import config_flags

  config_flags.DEFINE_config_file('config', 'configs/bench/synthetic.py', 'Benchmark config.',
                                  lock_config=False)

  def _main(_):
    logging.set_verbosity(logging.WARNING)
    result = run(flags.FLAGS.config)
    print()
    print(result['markdown'])
    print(f'written to {flags.FLAGS.config.output_dir}')

  app.run(_main, argv=argv)


if __name__ == '__main__':
  sys.path.insert(0, os.getcwd())
  main()

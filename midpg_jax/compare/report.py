"""What the comparison writes: tables (markdown), paired bootstrap intervals, plots.

Everything here is a function of finished runs' rows (dicts as in `runs.csv`) and their saved
test predictions; nothing trains.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# For bold: which direction is better per metric (None = closest to 1).
_BETTER = {'auc': max, 'logloss': min, 'auc_gap': min, 'calibration': None, 'params': min,
           'train_examples_per_s': max}


def as_float(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return math.nan


def summarise(rows: list[dict], columns: Sequence[str]) -> dict[str, dict[str, tuple]]:
  """{model: {column: (mean, std, n)}} over seeds, in first-seen model order."""
  by_model: dict[str, list[dict]] = {}
  for r in rows:
    by_model.setdefault(r['model'], []).append(r)
  out = {}
  for model, rs in by_model.items():
    out[model] = {}
    for c in columns:
      vals = np.array([as_float(r.get(c)) for r in rs])
      vals = vals[~np.isnan(vals)]
      out[model][c] = ((float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                        len(vals)) if len(vals) else (math.nan, math.nan, 0))
  return out


def _cell(column: str, mean: float, std: float, n: int) -> str:
  if math.isnan(mean):
    return 'undef'
  if column == 'params':
    return f'{mean:,.0f}'
  if column in ('train_examples_per_s', 'wall_s'):
    return f'{mean:,.0f}' + (f' ± {std:,.0f}' if n > 1 else '')
  return f'{mean:.4f}' + (f' ± {std:.4f}' if n > 1 else '')  # one seed: no spread to show


def markdown_table(summary: dict, columns: Sequence[str], title: str) -> str:
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
    cells = [_cell(c, *stats[c]) for c in columns]
    cells = [f'**{cell}**' if best[c] == model else cell for c, cell in zip(columns, cells)]
    lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
  seeds = sorted({s[columns[0]][2] for s in summary.values()})
  spread = (f'mean ± std over {seeds[0]} seeds' if seeds == [seeds[0]] and seeds[0] > 1 else
            'one seed (no spread)' if seeds == [1] else f'seeds per model: {seeds}')
  lines += ['', f'Test split, best validation checkpoint; {spread}; bold = best of the column '
            '(calibration: closest to 1).']
  return '\n'.join(lines)


# ---- paired bootstrap ----------------------------------------------------------------------

def weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """AUC (ties = 1/2) of `scores` under each row of `weights` (R, N) of example counts: (R,)."""
  order = np.argsort(scores, kind='mergesort')
  s, y = scores[order], labels[order].astype(np.float64)
  starts = np.concatenate([[0], np.flatnonzero(np.diff(s)) + 1])  # groups of tied scores
  w = weights[:, order].astype(np.float64)
  pos = np.add.reduceat(w * y, starts, axis=1)  # (R, G)
  neg = np.add.reduceat(w * (1 - y), starts, axis=1)
  negatives_below = np.cumsum(neg, axis=1) - neg
  wins = np.sum(pos * (negatives_below + 0.5 * neg), axis=1)
  return wins / (pos.sum(axis=1) * neg.sum(axis=1))


def paired_bootstrap(labels: np.ndarray, reference: Sequence[np.ndarray],
                     others: dict[str, Sequence[np.ndarray]], samples: int = 1000,
                     seed: int = 0, chunk: int = 50) -> dict[str, dict]:
  """AUC(reference) - AUC(model) on the same resampled test rows, for every model.

  Each side is the mean AUC over its seeds' predictions; every resample draws N rows with
  replacement (the same rows for both sides: the pairing). Returns {model: {'delta': point
  estimate on all rows, 'low', 'high': 2.5/97.5 percentiles, 'p_better': share of resamples in
  which the reference is better}}.
  """
  n = len(labels)
  rng = np.random.default_rng(seed)
  mean_auc = lambda preds, w: np.mean([weighted_aucs(labels, p, w) for p in preds], axis=0)
  ones = np.ones((1, n))
  deltas = {m: [] for m in others}
  point = {m: float(mean_auc(reference, ones)[0] - mean_auc(p, ones)[0])
           for m, p in others.items()}
  for start in range(0, samples, chunk):
    rows = rng.integers(0, n, size=(min(chunk, samples - start), n))
    w = np.stack([np.bincount(r, minlength=n) for r in rows])  # (R, N) counts
    ref = mean_auc(reference, w)
    for m, preds in others.items():
      deltas[m].append(ref - mean_auc(preds, w))
  out = {}
  for m, parts in deltas.items():
    d = np.concatenate(parts)
    out[m] = {'delta': point[m], 'low': float(np.percentile(d, 2.5)),
              'high': float(np.percentile(d, 97.5)), 'p_better': float(np.mean(d > 0))}
  return out


def bootstrap_table(result: dict, reference: str, samples: int) -> str:
  lines = [f'## {reference} minus each model: paired bootstrap of the test AUC', '',
           '| model | Δ AUC | 95 % interval | share of resamples with Δ > 0 |', '|---|---|---|---|']
  for m, r in result.items():
    lines.append(f'| {m} | {r["delta"]:+.4f} | [{r["low"]:+.4f}, {r["high"]:+.4f}] | '
                 f'{r["p_better"]:.3f} |')
  lines += ['', f'{samples} resamples of the test rows, the same rows for both models; each side '
            'is its mean AUC over its seeds.']
  return '\n'.join(lines)


# ---- plots ---------------------------------------------------------------------------------

def model_colors(names: Sequence[str]) -> dict[str, tuple]:
  """One colour per model or variant, the same in every plot of a comparison."""
  import matplotlib
  cmap = matplotlib.colormaps['tab20']  # tab10 repeats colours past 10 models
  return {n: tuple(cmap(i % 20)) for i, n in enumerate(names)}


def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def save(fig, path: str) -> None:
  fig.savefig(path, dpi=110)
  _pyplot().close(fig)


def scenario_figure(summary, scenario_names, colors):
  """Per-scenario test AUC by model: bars (mean ± std over seeds), the oracle as a black line."""
  plt = _pyplot()
  models = list(summary)
  groups = list(scenario_names) + ['overall']
  x = np.arange(len(groups))
  width = 0.8 / max(len(models), 1)
  fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups) + 0.3 * len(models)), 4.5))
  for i, m in enumerate(models):
    means = [summary[m][f'{g}/auc'][0] for g in groups]
    stds = [summary[m][f'{g}/auc'][1] for g in groups]
    ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=stds, label=m, capsize=2,
           color=colors[m])
  oracle = [summary[models[0]].get(f'{g}/oracle_auc', (math.nan,))[0] for g in groups]
  if not all(math.isnan(o) for o in oracle):
    # One short line per group; its legend entry is an ordinary line, drawn inside the legend's
    # box (a scatter marker as wide as a group would stick out of it).
    ax.hlines(oracle, x - 0.42, x + 0.42, color='black', linewidth=2, zorder=3, label='oracle')
  lo = np.nanmin([summary[m][f'{g}/auc'][0] for m in models for g in groups])
  ax.set_ylim(max(0.5, lo - 0.03), None)
  ax.set_xticks(x, groups)
  ax.set_ylabel('test AUC')
  ax.set_title('Per-scenario AUC by model (mean ± std over seeds)')
  ax.legend(fontsize=7, ncol=2, loc='upper left', bbox_to_anchor=(1, 1))
  fig.tight_layout()
  return fig


def line_figure(rows, x_key, y_key, colors, xlabel, ylabel, title, log_x=False):
  """One line per model of `y_key` against `x_key` (mean ± std over the rows at each x)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for m in dict.fromkeys(r['model'] for r in rows):
    pts: dict[float, list] = {}
    for r in rows:
      if r['model'] == m:
        pts.setdefault(as_float(r[x_key]), []).append(as_float(r[y_key]))
    xs = sorted(pts)
    ax.errorbar(xs, [np.mean(pts[v]) for v in xs], yerr=[np.std(pts[v]) for v in xs],
                marker='o', capsize=3, label=m, color=colors[m])
  if log_x:
    ax.set_xscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig

"""The one metrics path: exact AUC, logloss and calibration, per scenario and overall.

Training, `eval.py` and the benchmark all call `evaluate_predictions`. Everything is computed on
the host in float64 over the complete set of predictions (never averaged over batches, which
biases AUC).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

_EPS = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Exact ROC AUC (Mann-Whitney U) with ties counted as one half; NaN when one class is absent."""
  labels = np.asarray(labels, np.float64)
  scores = np.asarray(scores, np.float64)
  n_pos = float(labels.sum())
  n_neg = float(len(labels) - n_pos)
  if n_pos == 0 or n_neg == 0:
    return math.nan
  order = np.argsort(scores, kind='mergesort')
  sorted_scores = scores[order]
  # Average ranks of tied groups (1-based).
  boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [len(scores)]])
  avg_rank = (starts + ends + 1) / 2.0
  ranks = np.empty(len(scores))
  ranks[order] = np.repeat(avg_rank, ends - starts)
  rank_sum_pos = ranks[labels == 1].sum()
  return float((rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
  p = np.clip(np.asarray(probs, np.float64), _EPS, 1 - _EPS)
  y = np.asarray(labels, np.float64)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _group_metrics(labels, probs, oracle) -> dict[str, float]:
  observed = float(np.mean(labels))
  predicted = float(np.mean(probs))
  out = {
      'count': int(len(labels)),
      'positives': int(labels.sum()),
      'auc': auc(labels, probs),
      'logloss': logloss(labels, probs),
      'pred_rate': predicted,
      'obs_rate': observed,
      # predicted / observed conversion rate: 1 is perfectly calibrated on average.
      'calibration': predicted / observed if observed > 0 else math.nan,
  }
  if oracle is not None:
    out['oracle_auc'] = auc(labels, oracle)
    out['oracle_logloss'] = logloss(labels, oracle)
    out['auc_gap'] = out['oracle_auc'] - out['auc']
  return out


def evaluate_predictions(labels: np.ndarray, probs: np.ndarray, scenarios: np.ndarray,
                         scenario_names: Sequence[str],
                         oracle_probs: np.ndarray | None = None) -> dict[str, dict]:
  """Metrics per scenario (keyed by name) and 'overall'.

  A scenario with one class only gets AUC = NaN ("undefined"), not an error. A scenario with no
  examples is left out.
  """
  labels = np.asarray(labels, np.float64)
  probs = np.asarray(probs, np.float64)
  scenarios = np.asarray(scenarios)
  if not (len(labels) == len(probs) == len(scenarios)):
    raise ValueError('labels, probs and scenarios differ in length')
  if not np.isfinite(probs).all():
    raise ValueError('predictions contain NaN or inf')
  result = {}
  for s, name in enumerate(scenario_names):
    rows = scenarios == s
    if rows.any():
      result[name] = _group_metrics(labels[rows], probs[rows],
                                    None if oracle_probs is None else oracle_probs[rows])
  result['overall'] = _group_metrics(labels, probs, oracle_probs)
  return result


def flat_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """{'overall': {'auc': .7}} -> {'overall/auc': .7}: for JSONL logs and CSV rows."""
  return {f'{group}/{k}': v for group, d in metrics.items() for k, v in d.items()}


def format_table(metrics: Mapping[str, Mapping[str, float]], title: str = '') -> str:
  """A fixed-width text table, one row per scenario and one for overall."""
  has_oracle = any('oracle_auc' in d for d in metrics.values())
  cols = [('count', '{:>9d}'), ('positives', '{:>9d}'), ('auc', '{:>7.4f}'),
          ('logloss', '{:>8.5f}'), ('pred_rate', '{:>9.4f}'), ('obs_rate', '{:>8.4f}'),
          ('calibration', '{:>11.3f}')]
  if has_oracle:
    cols += [('oracle_auc', '{:>10.4f}'), ('oracle_logloss', '{:>14.5f}'), ('auc_gap', '{:>7.4f}')]
  name_w = max(10, *(len(k) for k in metrics))
  widths = [len(fmt.format(0 if 'd' in fmt else 0.0)) for _, fmt in cols]
  header = f'{"scenario":<{name_w}} ' + ' '.join(
      f'{c:>{max(w, len(c))}}' for (c, _), w in zip(cols, widths))
  lines = ([title] if title else []) + [header, '-' * len(header)]
  for group, d in metrics.items():
    cells = []
    for (c, fmt), w in zip(cols, widths):
      v = d.get(c, math.nan)
      w = max(w, len(c))
      if isinstance(v, float) and math.isnan(v):
        cells.append(f'{"undef":>{w}}')
      else:
        cells.append(f'{fmt.format(v):>{w}}')
    if group == 'overall':
      lines.append('-' * len(header))
    lines.append(f'{group:<{name_w}} ' + ' '.join(cells))
  return '\n'.join(lines)

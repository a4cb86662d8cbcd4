"""The study behind the training defaults (issue 9 point 4): which of the field's usual tools
against overfitting the ids lets every model keep improving past one pass, or stop at its best.

  python -m scripts.overfit_study --out runs/overfit_study [--stage 1] [--seeds 0]

Every (setting, model, seed) is one `train_and_evaluate` on the compare config's data (200k
training rows of the built-in data, validation 50k, test 50k), appended to `<out>/study.csv` with
its best validation AUC (what a setting is chosen on), the test AUC and gap to the oracle, the best
step and the wall time. Rows already in the file are skipped, so the study resumes.
"""

from __future__ import annotations

import argparse
import csv
import os
import time

MODELS = ('midpg', 'sar_net', 'mmoe')
_BEFORE = {'train.num_epochs': 2, 'train.schedule': 'constant'}  # the compare config until now
_ONE_PASS = {'train.num_epochs': 1, 'train.schedule': 'linear'}
_FAST = {**_ONE_PASS, 'train.learning_rate': 4e-3}  # decay: the mean rate is half the peak
SETTINGS = {
    # Stage 1 showed that one pass with a decaying rate at lr 1e-3 under-trains (midpg: val AUC
    # 0.714 against 0.764 at the end of the first pass at a constant 1e-3).
    1: {
        'before': _BEFORE,
        'linear1': _ONE_PASS,
        'cosine1': {'train.num_epochs': 1, 'train.schedule': 'cosine'},
    },
    # Stage 2, in the order it was run (the machine was shared: most informative first).
    2: {
        'linear1_lr4e-3': _FAST,
        'linear1_lr4e-3_l2_1e-2': {**_FAST, 'train.embedding_l2': 1e-2},
        'linear1_lr4e-3_min3': {**_FAST, 'data.min_count': 3},
        'linear1_lr4e-3_l2_1e-1': {**_FAST, 'train.embedding_l2': 1e-1},
        'linear1_lr4e-3_l2_1': {**_FAST, 'train.embedding_l2': 1.0},
        'linear2_lr4e-3_l2_1e-1': {**_FAST, 'train.num_epochs': 2, 'train.embedding_l2': 1e-1},
        'linear1_lr8e-3_l2_1e-1': {**_FAST, 'train.learning_rate': 8e-3,
                                   'train.embedding_l2': 1e-1},
        'linear1_lr1.6e-2_l2_1e-1': {**_FAST, 'train.learning_rate': 1.6e-2,
                                     'train.embedding_l2': 1e-1},
        'linear1_lr3.2e-2_l2_1e-1': {**_FAST, 'train.learning_rate': 3.2e-2,
                                     'train.embedding_l2': 1e-1},
        'linear2_lr4e-3_l2_1e-2': {**_FAST, 'train.num_epochs': 2, 'train.embedding_l2': 1e-2},
        'linear1_lr4e-3_drop0.1': {**_FAST, 'model.dropout': 0.1},
    },
}


def base_config():
  from midpg_jax.compare import config
  c = config.base_config()
  c.train.progress_bar = False
  return c


def apply(cfg, overrides: dict):
  for key, value in overrides.items():
    node = cfg
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    if leaf not in node:
      raise KeyError(key)
    node[leaf] = value
  return cfg


def markdown(path: str, chosen: str = 'linear1_lr4e-3_l2_1e-1') -> str:
  """setting x model: validation AUC (test AUC, gap to the oracle) at seed 0, in the order run;
  then the chosen setting over every seed run."""
  import numpy as np
  rows = list(csv.DictReader(open(path)))
  models = list(dict.fromkeys(r['model'] for r in rows))
  lines = ['| setting (seed 0) | ' + ' | '.join(f'{m}: val AUC (test AUC, gap)' for m in models)
           + ' |', '|---' * (len(models) + 1) + '|']
  for setting in dict.fromkeys(r['setting'] for r in rows):
    cells = []
    for m in models:
      r = [r for r in rows if r['setting'] == setting and r['model'] == m and r['seed'] == '0']
      cells.append(f"{float(r[0]['val_auc']):.4f} ({float(r[0]['test_auc']):.4f}, "
                   f"{float(r[0]['test_gap']):.4f})" if r else '-')
    lines.append(f'| {setting} | ' + ' | '.join(cells) + ' |')
  cells = []
  for m in models:
    r = [r for r in rows if r['setting'] == chosen and r['model'] == m]
    stat = lambda k: np.array([float(x[k]) for x in r])
    cells.append('-' if not r else ' / '.join(
        f'{stat(k).mean():.4f}' + (f' ± {stat(k).std(ddof=1):.4f}' if len(r) > 1 else '')
        for k in ('val_auc', 'test_auc', 'test_gap')) + f' ({len(r)} seeds)')
  lines.append(f'| {chosen}, val / test / gap over seeds | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', default='runs/overfit_study')
  parser.add_argument('--stage', type=int, default=1)
  parser.add_argument('--seeds', default='0')
  parser.add_argument('--models', default=','.join(MODELS))
  parser.add_argument('--settings', default='', help='comma-separated subset of the stage')
  parser.add_argument('--table', action='store_true', help='print study.csv as markdown, train nothing')
  args = parser.parse_args()
  if args.table:
    print(markdown(os.path.join(args.out, 'study.csv')))
    return
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  from midpg_jax import trainer
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'study.csv')
  done = set()
  if os.path.exists(path):
    done = {(r['setting'], r['model'], r['seed']) for r in csv.DictReader(open(path))}
  settings = SETTINGS[args.stage]
  names = args.settings.split(',') if args.settings else list(settings)
  for name in names:
    for model in args.models.split(','):
      for seed in args.seeds.split(','):
        if (name, model, seed) in done:
          continue
        cfg = apply(base_config(), {**settings[name], 'model.name': model, 'seed': int(seed)})
        started = time.perf_counter()
        s = trainer.train_and_evaluate(cfg, os.path.join(args.out, 'runs', name, model, seed))
        row = {'setting': name, 'model': model, 'seed': seed,
               'val_auc': round(s['validation']['overall']['auc'], 5),
               'test_auc': round(s['test']['overall']['auc'], 5),
               'test_gap': round(s['test']['overall'].get('auc_gap', float('nan')), 5),
               'best_step': s['best_step'], 'steps': s['steps'],
               'wall_s': round(time.perf_counter() - started, 1)}
        new = not os.path.exists(path)
        with open(path, 'a', newline='') as f:
          w = csv.DictWriter(f, fieldnames=list(row))
          if new:
            w.writeheader()
          w.writerow(row)
        print(row, flush=True)


if __name__ == '__main__':
  main()

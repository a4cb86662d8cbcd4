"""Small files in the raw formats that have no committed fixture: Scenario-Wise-Rec's CSV forms of
Ali-CCP, MIND and Douban, written by the tests (a few hundred rows each, deterministic: the same
bytes on every run), so that no test needs data from outside the repository.

Each generator documents what its files hold, so the tests assert against known values:
* Ali-CCP (`write_aliccp_sample`): ali_ccp_{train,val,test}_sample.csv with ALICCP_ROWS rows; a row
  is clicked when its index is a multiple of 4 and bought when a multiple of 8; field 301 (the
  scenario) is 1 or 2 in train and validation and 1, 2 or 3 in test; ids are drawn from 1-19 in
  train and 1-29 elsewhere (unseen ids at test time); D509 is constant.
* MIND (`write_mind_sample`): MIND_ROWS rows over 4 news categories of 3 subcategories each; a
  click is likely (0.6) in a category's first subcategory and unlikely (0.05) in the others, a
  signal a model can learn in a few steps.
* Douban (`write_douban_sample`): DOUBAN_ROWS rows over 3 domains, living places with an empty
  value and a quoted comma, DOUBAN_POSITIVES positive ratings.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from midpg_jax.data import aliccp

ALICCP_HEADER = ['click', 'purchase', *aliccp.SPARSE_COLUMNS[:18], '301',
                 *aliccp.SPARSE_COLUMNS[18:], *aliccp.DENSE_COLUMNS]
ALICCP_ROWS = {'train': 100, 'val': 50, 'test': 50}
ALICCP_FILES = {'train_files': 'ali_ccp_train_sample.csv',
                'validation_files': 'ali_ccp_val_sample.csv',
                'test_files': 'ali_ccp_test_sample.csv'}

MIND_ROWS = 1000
MIND_CATEGORIES = ('finance', 'lifestyle', 'news', 'sports')
DOUBAN_ROWS = 600
DOUBAN_DOMAINS = ('book', 'movie', 'music')
DOUBAN_POSITIVES = 350
_PLACES = ('北京', '上海', '', 'New York City, United States', '浙江杭州')


def _write(path, header, rows) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(rows)


def write_aliccp_sample(directory, suffix: str = '_sample') -> str:
  """The three Ali-CCP sample files in `directory` (see the module docstring); returns it.
  suffix '': the full data's names (ali_ccp_train.csv, ...), which configs/aliccp.py reads by
  default (it never reads *_sample.csv files)."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for stem, n in ALICCP_ROWS.items():
    rows = []
    for i in range(n):
      ids = rng.integers(1, 20 if stem == 'train' else 30, len(aliccp.SPARSE_COLUMNS))
      dense = np.round(rng.random(len(aliccp.DENSE_COLUMNS)), 4)
      dense[aliccp.DENSE_COLUMNS.index('D509')] = 0.0
      scenario = i % (3 if stem == 'test' else 2) + 1
      row = [int(i % 4 == 0), int(i % 8 == 0), *ids[:18], scenario, *ids[18:], *dense]
      rows.append([str(v) for v in row])
    _write(os.path.join(directory, f'ali_ccp_{stem}{suffix}.csv'), ALICCP_HEADER, rows)
  return str(directory)


def _write_sample(directory, name: str, header, n: int, seed: int, row) -> str:
  """`n` rows `row(i, rng)` of one seeded generator into directory/name; returns directory."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  _write(os.path.join(directory, name), header, [row(i, rng) for i in range(n)])
  return str(directory)


def _mind_row(i, rng) -> list:
  category = MIND_CATEGORIES[i % len(MIND_CATEGORIES)]
  sub = int(rng.integers(0, 3))
  click = int(rng.random() < (0.6 if sub == 0 else 0.05))
  return [f'U{rng.integers(1, 300)}', f'N{rng.integers(1, 400)}', click, category,
          f'{category}-{sub}']


def _douban_row(i, rng) -> list:
  month = int(rng.integers(1, 80))
  return [int(rng.integers(1, 200)), int(rng.integers(1, 400)), int(rng.random() < 0.6),
          DOUBAN_DOMAINS[i % len(DOUBAN_DOMAINS)], _PLACES[int(rng.integers(0, 5))],
          f'{2005 + month // 12}-{month % 12 + 1:02d}-01', month]


def write_mind_sample(directory) -> str:
  return _write_sample(directory, 'mind_sample.csv',
                       ['User_ID', 'News_ID', 'label', 'Category', 'SubCategory'], MIND_ROWS, 1,
                       _mind_row)


def write_douban_sample(directory) -> str:
  return _write_sample(directory, 'douban_sample.csv',
                       ['user_id', 'item_id', 'rating', 'domain', 'living_place', 'join_time',
                        'time_bin'], DOUBAN_ROWS, 2, _douban_row)


def write_samples(directory) -> str:
  """Every sample file above in one folder (as Scenario-Wise-Rec's samples sit together)."""
  for write in (write_aliccp_sample, write_mind_sample, write_douban_sample):
    write(directory)
  return str(directory)

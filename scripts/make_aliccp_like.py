"""Writes random files in Ali-CCP's CSV form (Scenario-Wise-Rec), of any size, chunk by chunk.

  python -m scripts.make_aliccp_like --out /tmp/aliccp20m --train_rows 20000000

ali_ccp_train.csv gets --train_rows rows, ali_ccp_val.csv and ali_ccp_test.csv a tenth each.
Zipf-distributed ids (capped per field), 20 % clicks, 5 % of clicks purchase, scenario 301 in
{1, 2, 3} (60/30/10 %), 8 dense columns in [0, 1) with 4 decimals. The labels follow a fixed
hidden model (the same for every file and seed) so that a learning curve has something to learn:
the click logit sums per-id effects of fields 205 (user) and 206 (item); the purchase logit, given a
click, sums an item effect, a per-scenario effect of field 207 (so the scenarios differ) and the
dense column D109_14. Ids are Zipf-distributed, so rare ids' effects take many rows to learn.
"""

import argparse
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from midpg_jax.data import aliccp

HEADER = ['click', 'purchase', *aliccp.SPARSE_COLUMNS[:18], '301', *aliccp.SPARSE_COLUMNS[18:],
          *aliccp.DENSE_COLUMNS]
ID_CAPS = dict(zip(aliccp.SPARSE_COLUMNS, (2, 9, 3, 8, 8, 3, 3, 3, 3, 400_000, 100_000, 80_000,
                                           60_000, 10_000, 800, 100, 1000, 500, 20, 20, 20, 20)))


# The hidden model: one effect per id (index = id, ids are 1..cap), drawn once from a fixed seed so
# that the training, validation and test files share it.
_HIDDEN = np.random.default_rng(20_260_101)
USER_EFFECT = _HIDDEN.normal(0, 0.8, ID_CAPS['205'] + 1)
ITEM_CLICK_EFFECT = _HIDDEN.normal(0, 0.8, ID_CAPS['206'] + 1)
ITEM_PURCHASE_EFFECT = _HIDDEN.normal(0, 0.8, ID_CAPS['206'] + 1)
SCENARIO_207_EFFECT = _HIDDEN.normal(0, 0.8, (4, ID_CAPS['207'] + 1))  # [scenario 0..3, id]


def _bernoulli(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
  return (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(np.int64)


def random_rows(rng: np.random.Generator, n: int) -> pa.Table:
  cols = {'301': 1 + np.searchsorted([0.6, 0.9], rng.random(n))}
  # Zipf(1.3) by inverse transform of its continuous (Pareto) tail: ~10x faster than rng.zipf.
  cols.update({c: np.minimum(rng.random(n) ** (-1 / 0.3), cap).astype(np.int64)
               for c, cap in ID_CAPS.items()})
  cols.update({c: rng.random(n).round(4) for c in aliccp.DENSE_COLUMNS})
  # ~20 % clicks, ~5 % of clicks purchase (the offsets), as in the release.
  click = _bernoulli(rng, -1.6 + USER_EFFECT[cols['205']] + ITEM_CLICK_EFFECT[cols['206']])
  purchase_logit = (-3.3 + ITEM_PURCHASE_EFFECT[cols['206']]
                    + SCENARIO_207_EFFECT[cols['301'], cols['207']]
                    + 2.0 * (cols['D109_14'] - 0.5))
  cols.update({'click': click, 'purchase': click * _bernoulli(rng, purchase_logit)})
  return pa.table({c: cols[c] for c in HEADER})


def write_file(path: str, rows: int, seed: int, chunk: int = 1_000_000) -> None:
  rng = np.random.default_rng(seed)
  tmp = path + '.tmp'
  with pacsv.CSVWriter(tmp, random_rows(rng, 0).schema) as writer:
    for lo in range(0, rows, chunk):
      writer.write_table(random_rows(rng, min(chunk, rows - lo)))
  os.replace(tmp, path)  # a complete file or none


def write_aliccp_like(directory: str, train_rows: int, seed: int = 0) -> None:
  os.makedirs(directory, exist_ok=True)
  for i, (name, n) in enumerate((('ali_ccp_train.csv', train_rows),
                                 ('ali_ccp_val.csv', train_rows // 10),
                                 ('ali_ccp_test.csv', train_rows // 10))):
    write_file(os.path.join(directory, name), n, seed + i)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='folder to write the three files into')
  parser.add_argument('--train_rows', type=int, default=1_000_000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  start = time.perf_counter()
  write_aliccp_like(args.out, args.train_rows, args.seed)
  size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)
             if f.startswith('ali_ccp_'))
  print(f'wrote {args.train_rows:,} training rows (+ 2 x {args.train_rows // 10:,}), '
        f'{size / 1e9:.2f} GB, into {args.out} in {time.perf_counter() - start:.0f}s')


if __name__ == '__main__':
  main()

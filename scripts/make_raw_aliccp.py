"""Writes a generated Ali-CCP release (sample_skeleton + common_features) and times the reader.

  python -m scripts.make_raw_aliccp --out /tmp/aliccp_raw --rows 1000000 --bench

The shape follows the real release: ~58 impressions per common_feature_index, ~500 features per
common line (the behaviour fields 109_14, 110_14, 127_14, 150_14 hold ~125 items each), ~13 per
skeleton line, multi-valued 210, fields we drop, a few click 0 / purchase 1 lines. `--swr` also
writes the Scenario-Wise-Rec form of the same rows (ali_ccp_{train,val,test}.csv), computed line by
line by `swr_rows`, an independent plain-Python statement of the rules in aliccp_raw's doc; the
tests compare the reader with it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import resource
import time

import numpy as np

from midpg_jax.data import aliccp_raw

USER_FIELDS = ('101', '121', '122', '124', '125', '126', '127', '128', '129')
BEHAVIOUR_FIELDS = ('109_14', '110_14', '127_14', '150_14')
ITEM_FIELDS = ('205', '206', '207', '216')
COMBO_FIELDS = ('508', '509', '702', '853')
SCENARIO_IDS = (9100232, 9100017, 9100555)  # raw feature ids of field 301


def _item(field, fid, value):
  return f'{field}\x02{fid}\x03{value}'


def write_release(directory: str, rows: int, seed: int = 0, behaviour_items: int = 125,
                  test_fraction: float = 0.25) -> None:
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  for part, n in (('train', rows), ('test', max(1, int(rows * test_fraction)))):
    n_keys = max(1, n // 58)
    keys = [hashlib.md5(f'{part}{seed}{k}'.encode()).hexdigest() for k in range(n_keys)]
    with open(os.path.join(directory, f'common_features_{part}.csv'), 'w') as f:
      for key in keys:
        items = [_item(fld, rng.integers(1, 10 ** (7 if fld == '101' else 3)), 1)
                 for fld in USER_FIELDS if rng.random() < 0.97]
        for fld in BEHAVIOUR_FIELDS:
          k = rng.integers(1, 2 * behaviour_items)
          ids, vals = rng.integers(1, 10 ** 6, k), np.round(rng.exponential(1.5, k), 5)
          items += [_item(fld, i, v) for i, v in zip(ids.tolist(), vals.tolist())]
        items.append(_item('999', rng.integers(1, 100), 1))  # a field nobody keeps
        f.write(f'{key},{len(items)},{chr(1).join(items)}\n')
    session = np.sort(rng.integers(0, n_keys, n))  # impressions grouped by key, as released
    click = rng.random(n) < 0.04
    purchase = click & (rng.random(n) < 0.05) | (rng.random(n) < 0.0005)  # a few 0/1 lines
    with open(os.path.join(directory, f'sample_skeleton_{part}.csv'), 'w') as f:
      for i in range(n):
        items = [_item(fld, rng.integers(1, 10 ** 6), 1) for fld in ITEM_FIELDS]
        items += [_item('210', rng.integers(1, 10 ** 5), 1) for _ in range(rng.integers(0, 3))]
        items += [_item(fld, rng.integers(1, 10 ** 6), round(float(rng.exponential()), 5))
                  for fld in COMBO_FIELDS if rng.random() < 0.6]
        items.append(_item('301', SCENARIO_IDS[rng.choice(3, p=(0.7, 0.2, 0.1))], 1))
        items.append(_item('150_1', rng.integers(1, 10 ** 4), 1))  # dropped field
        f.write(f'{i + 1},{int(click[i])},{int(purchase[i])},{keys[session[i]]},'
                f'{len(items)},{chr(1).join(items)}\n')


def _parse(text: str) -> dict[str, str]:
  """The kept fields of one feature list, later items overwriting earlier ones (as SWR does)."""
  out = {}
  for item in text.split('\x01') if text else ():
    field, rest = item.split('\x02')
    fid, value = rest.split('\x03')
    if field in aliccp_raw.SPARSE_FIELDS:
      out[field] = fid
    if field in aliccp_raw.DENSE_FIELDS:
      out['D' + field] = value
  return out


def swr_rows(directory: str, part: str):
  """(sample_id, row in the SWR CSV form as strings) of every kept impression of `part`."""
  common = {}
  with open(os.path.join(directory, f'common_features_{part}.csv')) as f:
    for line in f:
      key, _, text = line.rstrip('\n').split(',')
      common[key] = _parse(text)
  codes = {}
  with open(os.path.join(directory, 'sample_skeleton_train.csv')) as f:
    for line in f:
      _, click, purchase, _, _, text = line.rstrip('\n').split(',')
      if (click, purchase) != ('0', '1') and '301' in _parse(text):
        codes.setdefault(_parse(text)['301'], str(len(codes) + 1))
  with open(os.path.join(directory, f'sample_skeleton_{part}.csv')) as f:
    for line in f:
      sample_id, click, purchase, key, _, text = line.rstrip('\n').split(',')
      if (click, purchase) == ('0', '1'):
        continue
      feats = _parse(text)
      feats.update(common[key])
      if '301' in feats:
        feats['301'] = codes[feats['301']]
      yield int(sample_id), [click, purchase] + [feats.get(c, '0') for c in aliccp_raw.COLUMNS[2:]]


def write_swr(directory: str) -> None:
  for part in ('train', 'test'):
    rows = list(swr_rows(directory, part))
    if part == 'train':
      splits = {'train': [r for _, r in rows]}
    else:
      half = aliccp_raw._test_half(np.array([s for s, _ in rows], np.int64))
      splits = {'val': [r for (_, r), h in zip(rows, half) if not h],
                'test': [r for (_, r), h in zip(rows, half) if h]}
    for name, split_rows in splits.items():
      with open(os.path.join(directory, f'ali_ccp_{name}.csv'), 'w', newline='') as f:
        w = csv.writer(f, lineterminator='\n')
        w.writerow(aliccp_raw.COLUMNS)
        w.writerows(split_rows)


def bench(directory: str) -> None:
  """Reads the training split twice: the first pass includes parsing the common features."""
  for n_pass in (1, 2):
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for columns, _ in aliccp_raw.iter_raw_aliccp(directory, 'train'):
      n += len(columns['click'])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f'pass {n_pass}: {n} rows in {wall:.1f} s wall ({n / wall:,.0f} rows/s), {cpu:.1f} s '
          f'CPU ({n / cpu:,.0f} rows/CPU-s); peak RSS so far {rss:.2f} GB; load average '
          f'{os.getloadavg()[0]:.1f}', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--swr', action='store_true', help='also write the SWR CSV form')
  parser.add_argument('--bench', action='store_true', help='time the reader on the files')
  args = parser.parse_args()
  if not aliccp_raw.detect_raw_release(args.out):
    start = time.perf_counter()
    write_release(args.out, args.rows, args.seed)
    print(f'wrote {args.out} in {time.perf_counter() - start:.0f} s')
  if args.swr:
    write_swr(args.out)
  if args.bench:
    bench(args.out)


if __name__ == '__main__':
  main()

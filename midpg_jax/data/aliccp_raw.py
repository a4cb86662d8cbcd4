"""Ali-CCP as released on Tianchi (sample_skeleton + common_features), streamed as the columns of
the Scenario-Wise-Rec (SWR) CSV form that `aliccp.py` reads.

The release (https://tianchi.aliyun.com/dataset/408) has two files per split, without header:

  sample_skeleton_{train,test}.csv   sample_id,click,purchase,common_feature_index,feature_num,
                                     feature_list        (one line per impression)
  common_features_{train,test}.csv   common_feature_index,feature_num,feature_list
                                     (one line per key: the user-side features that many
                                     impressions share)

A feature_list is `field_id \\x02 feature_id \\x03 value` items joined by `\\x01`; a field may
occur several times on a line (the behaviour fields 109_14, 110_14, 127_14, 150_14 hold many).
Public preprocessing scripts report ~42M training impressions, ~730k keys per split and ~500
items per common line.

`iter_raw_aliccp` yields the columns that SWR's scripts/data/ali-ccp/preprocess_ali_ccp.py writes
at its join step, with its rules, so both forms give the same model inputs up to a renumbering
of ids:
* kept: the ids of `SPARSE_FIELDS` (column = field id, int64) and the values of `DENSE_FIELDS`
  (column 'D' + field id, float64); other fields are dropped;
* a field several times on a line: its LAST item gives id and value (SWR overwrites a dict entry
  per item); a field in both files: the common features win (SWR updates the skeleton's dict with
  the common one); a field in neither: 0 (id and value);
* impressions with click 0 and purchase 1 are dropped (as SWR does);
* field 301 (the scenario) becomes 1, 2, 3, SWR's numbering: first appearance in the training
  skeleton's kept rows (SWR numbers every field so). Other ids stay the release's: SWR's
  renumbering of them is a relabelling that preparation redoes with its own vocabulary (SWR
  maps ids seen < 10 times in training to 0, as `min_count=10` does, but also its missing 0; here
  a missing field stays its own id 0). Dense values stay unscaled: SWR min-max scales
  them, which preparation's 'standard' or 'minmax' scaling cancels (invariant to x -> a x + b).
* splits: 'train' is the train files; 'validation' and 'test' are halves of the test files (SWR
  splits them 50/50 at random) by a fixed hash of sample_id, so a row's split does not depend on
  chunks or file order (SWR's own random rows would need the whole file in memory).
A skeleton line whose common_feature_index is not in the split's common file is an error (SWR
fails there too), as is any malformed line, and a feature_num that is not the number of items of
its line's feature list (a line cut short or joined with another): DataError naming the file,
line and problem.

Memory: a split's common features are held as a table: per key the fields the file has (8 bytes
per id, 1 per presence flag, 8 per dense value) and the key in a dict; measured 292 bytes/key
with 13 fields (300k generated keys), so ~210 MB for a 730k-key split, twice that while it is
built; the last two tables are cached, so preparation's passes parse each multi-GB file once.
Besides, one chunk (`chunk_rows` lines) and one 4 MB block of the common file: memory does not
grow with the number of impressions.
"""

from __future__ import annotations

import collections
import os
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from midpg_jax.data import feature_lists
from midpg_jax.errors import DataError

SPARSE_FIELDS = ('101', '121', '122', '124', '125', '126', '127', '128', '129', '205', '206',
                 '207', '210', '216', '508', '509', '702', '853', '301', '109_14', '110_14',
                 '127_14', '150_14')
DENSE_FIELDS = ('109_14', '110_14', '127_14', '150_14', '508', '509', '702', '853')
SCENARIO_FIELD = '301'
LINE = '_line'  # extra column: each row's 1-based line in the skeleton file (rows are dropped)
COLUMNS = ('click', 'purchase', *SPARSE_FIELDS, *('D' + f for f in DENSE_FIELDS))
SPLITS = ('train', 'validation', 'test')
N_SCENARIOS = 3  # field 301 has three feature ids; SWR's runner maps them {1: 0, 2: 1, 3: 2}

INSTRUCTIONS = """\
Ali-CCP in its original release form: download "Ali-CCP: Alibaba Click and Conversion Prediction"
from Tianchi, https://tianchi.aliyun.com/dataset/408 (an Alibaba Cloud login is needed), i.e. the
training and the test archive, and extract them. Put these four files into one folder (each may
also be gzipped, name.csv.gz):
  sample_skeleton_train.csv  common_features_train.csv
  sample_skeleton_test.csv   common_features_test.csv
and pass it as --config.data.manual_dir=<folder>. Training uses the train files; validation and
test are the two halves of the test files. The Scenario-Wise-Rec CSV form (ali_ccp_train.csv, ...)
is read from the same option instead when the folder holds that form.
"""

_SKELETON_COLUMNS = ('sample_id', 'click', 'purchase', 'key', 'feature_num', 'features')
_COMMON_COLUMNS = ('key', 'feature_num', 'features')
_COMMON_BLOCK = 1 << 22  # bytes parsed at a time: ~350 common lines of the release
_MIN_BLOCK = 1 << 20
_FIELDS = feature_lists.FieldSet(SPARSE_FIELDS, DENSE_FIELDS)
_DENSE_SLOT = _FIELDS.dense_slot  # field code -> row of the dense value array, or -1


def _path(directory: str, stem: str) -> str | None:
  for name in (stem + '.csv', stem + '.csv.gz'):
    p = os.path.join(directory, name)
    if os.path.isfile(p):
      return p
  return None


def detect_raw_release(directory: str) -> bool:
  """True if `directory` holds the release's training skeleton (then read it with this module)."""
  return _path(directory, 'sample_skeleton_train') is not None


def release_file(directory: str, stem: str) -> str:
  """The path of the release's file `stem` (.csv or .csv.gz); DataError naming it if absent."""
  p = _path(directory, stem)
  if p is None:
    raise DataError(f'Ali-CCP raw release: {stem}.csv (or .csv.gz) is not in {directory!r}.\n'
                    f'{INSTRUCTIONS}')
  return p


class _CommonTable:
  """The kept fields of every key of a common_features file (see the module doc for its size)."""

  def __init__(self, path: str, progress: bool):
    keys, chunks = [], []  # chunks: (field codes it has, their ids, presence, dense values)
    for batch, first in feature_lists.read_blocks(path, _COMMON_COLUMNS, _COMMON_BLOCK, progress):
      lines = np.arange(first, first + batch.num_rows)
      ids, present, values = feature_lists.parse(batch.column('features'), _FIELDS, path, lines)
      feature_lists.check_counts(batch.column('feature_num'), batch.column('features'), path,
                                 lines)
      has = np.flatnonzero(present.any(axis=1))  # only those: ~16 of 23 fields in the release
      chunks.append((has, ids[has], present[has], values[_DENSE_SLOT[has[_DENSE_SLOT[has] >= 0]]]))
      keys.extend(batch.column('key').to_pylist())
    self.index = dict(zip(keys, range(len(keys))))
    if len(self.index) < len(keys):
      seen = {}
      for line, k in enumerate(keys, 1):
        if k in seen:
          raise DataError(f'{path}, line {line}: common_feature_index {k!r} already on line '
                          f'{seen[k]}')
        seen[k] = line
    # Fields this file has at all (sorted codes), then (F', K) arrays of them, 0 where absent.
    self.fields = np.unique(np.concatenate([has for has, *_ in chunks] or [np.zeros(0, int)]))
    self.dense = self.fields[_DENSE_SLOT[self.fields] >= 0]
    self.ids = np.zeros((len(self.fields), len(keys)), np.int64)
    self.present = np.zeros((len(self.fields), len(keys)), bool)
    self.values = np.zeros((len(self.dense), len(keys)), np.float64)
    start = 0
    for has, ids, present, values in chunks:
      end = start + ids.shape[1]
      at = np.searchsorted(self.fields, has)
      self.ids[at, start:end], self.present[at, start:end] = ids, present
      self.values[np.searchsorted(self.dense, has[_DENSE_SLOT[has] >= 0]), start:end] = values
      start = end

  def lookup(self, keys: pa.Array, path: str, lines: np.ndarray) -> np.ndarray:
    """(N,) row of each key; a key not in the table is an error naming the skeleton line."""
    encoded = pc.dictionary_encode(keys)
    found = np.array([self.index.get(k, -1) for k in encoded.dictionary.to_pylist()], np.int64)
    rows = found[encoded.indices.to_numpy()] if len(found) else np.zeros(0, np.int64)
    if (rows < 0).any():
      i = int(np.argmax(rows < 0))
      raise DataError(f'{path}, line {lines[i]}: common_feature_index {keys[i].as_py()!r} is '
                      'not in the common_features file of this split (are the files from the '
                      'same split?)')
    return rows


_cache: collections.OrderedDict = collections.OrderedDict()


def _common_table(path: str, progress: bool) -> _CommonTable:
  """The table of `path`, parsed once while the file is unchanged (the last two are kept)."""
  stat = os.stat(path)
  key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
  if key not in _cache:
    _cache[key] = _CommonTable(path, progress)
    while len(_cache) > 2:
      _cache.popitem(last=False)
  _cache.move_to_end(key)
  return _cache[key]


def _labels(batch: pa.RecordBatch, path: str, lines: np.ndarray):
  out = []
  for name in ('click', 'purchase'):
    text = batch.column(name)
    ok = pc.is_in(text, value_set=pa.array(['0', '1'])).to_numpy(zero_copy_only=False)
    if not ok.all():
      i = int(np.argmin(ok))
      raise DataError(f'{path}, line {lines[i]}, column {name!r}: {text[i].as_py()!r} is not '
                      'a label 0 or 1')
    out.append(pc.equal(text, '1').to_numpy(zero_copy_only=False))
  return out


def _test_half(sample_id: np.ndarray) -> np.ndarray:
  """(N,) bool, True for the 'test' half: one bit of a fixed integer hash (splitmix64)."""
  with np.errstate(over='ignore'):
    z = sample_id.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((z ^ (z >> np.uint64(31))) & np.uint64(1)).astype(bool)


def _skeleton_chunks(path: str, chunk_rows: int, progress: bool):
  """(batch, lines, ids, present, values, click, purchase) of the kept impressions."""
  block = max(_MIN_BLOCK, min(chunk_rows * 320, 1 << 28))  # release lines: ~300 bytes
  for whole, first in feature_lists.read_blocks(path, _SKELETON_COLUMNS, block, progress):
    for start in range(0, whole.num_rows, chunk_rows):
      batch = whole.slice(start, chunk_rows)
      lines = np.arange(first + start, first + start + batch.num_rows)
      click, purchase = _labels(batch, path, lines)
      keep = click | ~purchase  # SWR drops click 0 & purchase 1
      if not keep.all():
        batch, lines = batch.filter(pa.array(keep)), lines[keep]
        click, purchase = click[keep], purchase[keep]
      ids, present, values = feature_lists.parse(batch.column('features'), _FIELDS, path, lines)
      yield batch, lines, ids, present, values, click, purchase


def scenario_ids(directory: str, progress: bool = False) -> dict[int, int]:
  """{raw feature id of field 301: 1, 2, 3} in order of first appearance in the training
  skeleton's kept rows (SWR's re-indexing); reads only until the three are seen."""
  path = release_file(directory, 'sample_skeleton_train')
  slot = SPARSE_FIELDS.index(SCENARIO_FIELD)
  codes: dict[int, int] = {}
  for _, _, ids, present, _, _, _ in _skeleton_chunks(path, 1 << 14, progress):
    for raw in ids[slot][present[slot]]:
      codes.setdefault(int(raw), len(codes) + 1)
      if len(codes) == N_SCENARIOS:
        return codes
  if not codes:
    raise DataError(f'{path}: no row has field {SCENARIO_FIELD} (the scenario)')
  return codes


def iter_raw_aliccp(directory: str, split: str, *, chunk_rows: int = 1 << 15,
                    progress: bool = False) -> Iterator[tuple[dict[str, pa.Array], int]]:
  """Yields (columns, first line) per chunk of at most `chunk_rows` impressions of `split`.

  columns: `COLUMNS` in the Scenario-Wise-Rec CSV form (click, purchase and ids int64, 'D*'
  float64; see the module doc) plus `LINE` (int64, each row's line in the skeleton file: dropped
  rows make lines non-contiguous); first line: the skeleton line of the chunk's first row.
  Bad input raises DataError naming the file, line and what is wrong.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, not {split!r}')
  part = 'train' if split == 'train' else 'test'
  skeleton = release_file(directory, f'sample_skeleton_{part}')
  common = _common_table(release_file(directory, f'common_features_{part}'), progress)
  codes = scenario_ids(directory)
  raw_301 = np.array(list(codes), np.int64)
  slot_301 = SPARSE_FIELDS.index(SCENARIO_FIELD)
  for batch, lines, ids, present, values, click, purchase in _skeleton_chunks(
      skeleton, chunk_rows, progress):
    sample_id = feature_lists.integers(batch.column('sample_id'), 'sample_id', skeleton, lines)
    feature_lists.check_counts(batch.column('feature_num'), batch.column('features'), skeleton,
                               lines)
    if split != 'train':
      keep = _test_half(sample_id) == (split == 'test')
      batch, lines, click, purchase = batch.filter(pa.array(keep)), lines[keep], click[keep], \
          purchase[keep]
      ids, present, values = ids[:, keep], present[:, keep], values[:, keep]
    if not len(lines):
      continue
    at = common.lookup(batch.column('key'), skeleton, lines)  # (N,)
    wins = common.present[:, at]  # (F', N): the common features override the skeleton's
    ids[common.fields] = np.where(wins, common.ids[:, at], ids[common.fields])
    present[common.fields] |= wins
    slots = _DENSE_SLOT[common.dense]
    values[slots] = np.where(wins[np.searchsorted(common.fields, common.dense)],
                             common.values[:, at], values[slots])
    scenario = ids[slot_301]
    known = np.isin(scenario, raw_301) | ~present[slot_301]
    if not known.all():
      i = int(np.argmin(known))
      raise DataError(f'{skeleton}, line {lines[i]}, field {SCENARIO_FIELD!r}: feature id '
                      f'{scenario[i]} is none of the {len(codes)} scenario ids {codes} (taken '
                      'from the training skeleton)')
    ids[slot_301] = np.where(present[slot_301], _map(scenario, codes), 0)
    columns = {'click': pa.array(click.astype(np.int64)),
               'purchase': pa.array(purchase.astype(np.int64))}
    columns.update((f, pa.array(ids[i])) for i, f in enumerate(SPARSE_FIELDS))
    columns.update(('D' + f, pa.array(values[i])) for i, f in enumerate(DENSE_FIELDS))
    columns[LINE] = pa.array(lines.astype(np.int64))
    yield {c: columns[c] for c in (*COLUMNS, LINE)}, int(lines[0])


def _map(values: np.ndarray, codes: dict[int, int]) -> np.ndarray:
  out = np.zeros_like(values)
  for raw, code in codes.items():
    out[values == raw] = code
  return out

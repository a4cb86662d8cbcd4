"""Ali-CCP as released on Tianchi (sample_skeleton + common_features), read as Scenario-Wise-Rec
CSV columns, streaming.

The release (https://tianchi.aliyun.com/dataset/408) has two files per split, without header:

  sample_skeleton_{train,test}.csv   sample_id,click,purchase,common_feature_index,feature_num,
                                     feature_list            (one line per impression, ~42M train)
  common_features_{train,test}.csv   common_feature_index,feature_num,feature_list
                                     (one line per key, the user-side features shared by many
                                     impressions; ~730k keys per split, ~500 features per line)

A feature_list is `field_id \\x02 feature_id \\x03 value` items joined by `\\x01`. A field may occur
several times on a line (the user-behaviour fields 109_14, 110_14, 127_14 and 150_14 hold hundreds).

`iter_raw_aliccp` turns them into exactly the columns of Scenario-Wise-Rec's
`scripts/data/ali-ccp/preprocess_ali_ccp.py` join step (the CSV header of `aliccp.py`), with its
choices, which we follow so that both forms of the data give the same model inputs:
* kept fields: `SPARSE_FIELDS` as integer ids (column = field id) and the values of
  `DENSE_FIELDS` as floats (column 'D' + field id); every other field is dropped;
* a field occurring several times on one line: the LAST occurrence gives id and value (SWR
  overwrites a dict entry per item); a field present in both files: the common features win (SWR
  updates the skeleton's dict with the common one); a field absent from both: 0 (id and value);
* impressions with click 0 and purchase 1 are dropped (SWR drops them: a conversion without click);
* field 301 (the scenario) becomes 1, 2, 3: SWR re-indexes every field by first appearance in the
  training split; for 301 we do the same (its three feature ids, in order of first appearance in
  the training skeleton's kept rows). Other ids stay the release's feature ids: SWR's re-indexing
  of them is a relabelling (plus rare ids -> 0) that preparation's own vocabulary and `min_count`
  (SWR uses 10) redo. Dense values stay unscaled: SWR min-max scales them, which preparation's
  'standard' or 'minmax' scaling undoes (both are invariant to a positive affine map).
* splits: 'train' is the training files; 'validation' and 'test' are the two halves of the test
  files (SWR splits them 50/50 at random), chosen by a fixed hash of sample_id, so a row's split
  does not depend on chunking or file order (not SWR's exact rows: its split needs the whole file).

Memory: the common features of a split are held as a table: per key its kept fields (8 bytes per
id, 8 per dense value, 1 per presence flag, only fields the file has; ~16 for the release) and
the key itself in a dict, ~250 bytes per key: ~200 MB for a release split (730k keys), the last
two tables cached so the two passes of preparation parse each 8 GB file once. Beyond that, memory
is one chunk: it does not grow with the number of skeleton rows.
"""

from __future__ import annotations

import collections
import os
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

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
_INT_RE = '^[-+]?[0-9]+$'
_COMMON_BLOCK = 1 << 24  # bytes parsed at a time: ~1400 common lines of the release
_MIN_BLOCK = 1 << 20
# A field id as a little-endian uint64 of its bytes, zero-padded (kept ids are <= 8 bytes).
_FIELD_KEYS = np.array([int.from_bytes(f.encode(), 'little') for f in SPARSE_FIELDS], np.uint64)
_FIELD_ORDER = np.argsort(_FIELD_KEYS)
_DENSE_CODE = np.array([SPARSE_FIELDS.index(f) for f in DENSE_FIELDS])  # (D,) field codes
_DENSE_SLOT = np.full(len(SPARSE_FIELDS), -1)  # field code -> row of the dense value array
_DENSE_SLOT[_DENSE_CODE] = np.arange(len(DENSE_FIELDS))


def _path(directory: str, stem: str) -> str | None:
  for name in (stem + '.csv', stem + '.csv.gz'):
    p = os.path.join(directory, name)
    if os.path.isfile(p):
      return p
  return None


def detect_raw_release(directory: str) -> bool:
  """True if `directory` holds the release's training skeleton (then read it with this module)."""
  return _path(directory, 'sample_skeleton_train') is not None


def _require(directory: str, stem: str) -> str:
  p = _path(directory, stem)
  if p is None:
    raise DataError(f'Ali-CCP raw release: {stem}.csv (or .csv.gz) is not in {directory!r}.\n'
                    f'{INSTRUCTIONS}')
  return p


def _batches(path: str, names, block_size: int, progress: bool):
  """Yields (RecordBatch of string columns, line of its first row), streaming the file."""
  bad_rows = []

  def on_bad_row(row):  # called by pyarrow on a line with the wrong number of columns
    bad_rows.append(row)
    return 'error'

  def parse_error(e: Exception) -> DataError:
    if bad_rows:
      return DataError(f'{path}, line {bad_rows[0].number}: expected {len(names)} comma-'
                       f'separated columns ({",".join(names)}), found '
                       f'{bad_rows[0].actual_columns}')
    return DataError(f'{path}: cannot parse the file: {e}')

  with open(path, 'rb') as raw, tqdm(total=os.path.getsize(path), unit='B', unit_scale=True,
                                     leave=False, desc=os.path.basename(path),
                                     disable=not progress, dynamic_ncols=True) as bar:
    stream = pa.input_stream(raw, compression='gzip' if path.endswith('.gz') else None)
    try:  # open_csv already parses the first block
      reader = pacsv.open_csv(
          stream, read_options=pacsv.ReadOptions(column_names=list(names),
                                                 block_size=block_size,
                                                 use_threads=False),  # exact row numbers
          parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False,
                                           invalid_row_handler=on_bad_row),
          convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                               strings_can_be_null=False))
    except pa.ArrowInvalid as e:
      raise parse_error(e) from None
    line = 1
    while True:
      try:
        batch = reader.read_next_batch()
      except StopIteration:
        return
      except pa.ArrowInvalid as e:
        raise parse_error(e) from None
      bar.update(raw.tell() - bar.n)
      yield batch, line
      line += batch.num_rows


def _integers(text: pa.Array, what: str, path: str, lines: np.ndarray) -> np.ndarray:
  try:
    return pc.cast(text, pa.int64()).to_numpy()
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
    ok = pc.match_substring_regex(text, _INT_RE).to_numpy(zero_copy_only=False)
    if ok.all():  # digits only, so beyond the int64 range
      raise DataError(f'{path}: {what} out of the 64-bit integer range ({e})') from None
    i = int(np.argmin(ok))
    raise DataError(f'{path}, line {lines[i]}, {what}: {text[i].as_py()!r} is not an '
                    'integer') from None


def _substrings(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
  """A StringArray of the byte ranges [starts, ends) of `buf` (one vectorised gather)."""
  lengths = ends - starts
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
  at = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
  return pa.StringArray.from_buffers(len(starts), pa.py_buffer(offsets),
                                     pa.py_buffer(buf[at].tobytes()))


def _digits(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, path: str,
            lines: np.ndarray) -> np.ndarray:
  """The integers written in the byte ranges [starts, ends) of `buf`: (K,) int64.

  Decimal digits are summed column by column (4x faster than building strings for
  pyarrow); anything else (a sign, no digits, > 18 digits) goes through `_integers`.
  """
  width = ends - starts
  if not len(width) or width.min() < 1 or width.max() > 18:
    return _integers(_substrings(buf, starts, ends), 'feature id', path, lines)
  value = np.zeros(len(width), np.int64)
  last = len(buf) - 1
  for j in range(int(width.max())):
    inside = j < width
    digit = buf[np.minimum(starts + j, last)].astype(np.int64) - 48
    if ((digit < 0) | (digit > 9))[inside].any():
      return _integers(_substrings(buf, starts, ends), 'feature id', path, lines)
    value = np.where(inside, value * 10 + digit, value)
  return value


def _features(lists: pa.Array, path: str, lines: np.ndarray):
  """Parses feature lists (one per row) into the kept fields, the last occurrence of each.

  Returns ids (F, N) int64, present (F, N) bool and dense values (D, N) float64, with F =
  len(SPARSE_FIELDS), D = len(DENSE_FIELDS) and 0 where a field is absent. Works on the bytes:
  a release line has ~500 items of which ~16 are kept, so only those are converted.
  """
  n = len(lists)
  offsets = np.frombuffer(lists.buffers()[1], np.int32)[lists.offset:lists.offset + n + 1]
  data = lists.buffers()[2]
  buf = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]] if data else np.zeros(0, np.uint8)
  off = (offsets - offsets[0]).astype(np.int64)
  # Separators: within a row exactly 2 3 1 2 3 1 ... 2 3 (\x02 after the field, \x03 before the
  # value, \x01 between items); anything else (or a \x00) is a malformed line.
  pos = np.flatnonzero(buf <= 3)
  sep = buf[pos]
  bounds = np.searchsorted(pos, off)  # (N + 1,) index of each row's first separator
  first, count = bounds[:-1], np.diff(bounds)  # (N,) and separators per row
  row = np.repeat(np.arange(n), count)  # (S,) row of each separator
  rank = np.arange(len(pos)) - first[row]
  bad = np.zeros(n, bool)
  bad[row[sep != np.array([2, 3, 1], np.uint8)[rank % 3]]] = True
  bad |= (off[1:] > off[:-1]) & (count % 3 != 2)
  if bad.any():
    i = int(np.argmax(bad))
    text = lists[i].as_py()
    raise DataError(f'{path}, line {lines[i]}: the feature list {text[:80]!r}'
                    f'{"..." if len(text) > 80 else ""} is not field_id\\x02feature_id\\x03value '
                    'items joined by \\x01')
  two = np.flatnonzero(sep == 2)  # one per item, in order: (I,)
  item_row = row[two]
  start = np.where(rank[two] == 0, off[item_row], pos[two - 1] + 1)
  mid, end_sep = pos[two], two + 1  # field | mid | id | pos[end_sep] | value
  row_end = rank[end_sep] == count[item_row] - 1  # the value runs to the end of the row
  end = np.where(row_end, off[item_row + 1], pos[np.minimum(end_sep + 1, len(pos) - 1)])
  # Field code of each item: its (<= 8) bytes as one uint64, looked up among the kept fields.
  width = mid - start
  padded = np.concatenate([buf, np.zeros(8, np.uint8)])
  windows = np.ndarray((len(buf) + 1,), '<u8', padded, strides=(1,))  # 8 bytes from each byte
  key = windows[start] & np.where(width < 8, (np.uint64(1) << (8 * np.minimum(width, 7)).astype(
      np.uint64)) - np.uint64(1), ~np.uint64(0))
  slot = _FIELD_ORDER[np.minimum(np.searchsorted(_FIELD_KEYS[_FIELD_ORDER], key),
                                 len(_FIELD_KEYS) - 1)]
  kept = (_FIELD_KEYS[slot] == key) & (width > 0) & (width <= 8)
  items, code = np.flatnonzero(kept), slot[kept]
  # The last item of each (row, field): the largest item index per (row, field) pair.
  pair = item_row[items] * len(SPARSE_FIELDS) + code
  latest = np.full(n * len(SPARSE_FIELDS), -1, np.int64)
  np.maximum.at(latest, pair, np.arange(len(items)))
  last = latest[latest >= 0]
  items, code = items[last], code[last]
  rows = item_row[items]
  where = lines[rows]
  ids = np.zeros((len(SPARSE_FIELDS), n), np.int64)
  present = np.zeros((len(SPARSE_FIELDS), n), bool)
  ids[code, rows] = _digits(buf, mid[items] + 1, pos[end_sep[items]], path, where)
  present[code, rows] = True
  values = np.zeros((len(DENSE_FIELDS), n), np.float64)
  dense = _DENSE_SLOT[code] >= 0
  text = _substrings(buf, pos[end_sep[items[dense]]] + 1, end[items[dense]])
  try:
    v = pc.cast(text, pa.float64()).to_numpy()
  except pa.ArrowInvalid:
    v = np.array([_float_or_nan(t) for t in text.to_pylist()])
  if not np.isfinite(v).all():
    i = int(np.argmin(np.isfinite(v)))
    raise DataError(f'{path}, line {where[dense][i]}, field {SPARSE_FIELDS[code[dense][i]]!r}: '
                    f'value {text[i].as_py()!r} is not a finite number')
  values[_DENSE_SLOT[code[dense]], rows[dense]] = v
  return ids, present, values


def _float_or_nan(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    return float('nan')


class _CommonTable:
  """The kept fields of every key of a common_features file (see the module doc for its size)."""

  def __init__(self, path: str, progress: bool):
    keys, chunks = [], []  # chunks: (field codes it has, their ids, presence, dense values)
    for batch, first in _batches(path, _COMMON_COLUMNS, _COMMON_BLOCK, progress):
      lines = np.arange(first, first + batch.num_rows)
      _integers(batch.column('feature_num'), 'feature_num', path, lines)
      ids, present, values = _features(batch.column('features'), path, lines)
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
  for whole, first in _batches(path, _SKELETON_COLUMNS, block, progress):
    for start in range(0, whole.num_rows, chunk_rows):
      batch = whole.slice(start, chunk_rows)
      lines = np.arange(first + start, first + start + batch.num_rows)
      click, purchase = _labels(batch, path, lines)
      keep = click | ~purchase  # SWR drops click 0 & purchase 1
      if not keep.all():
        batch, lines = batch.filter(pa.array(keep)), lines[keep]
        click, purchase = click[keep], purchase[keep]
      ids, present, values = _features(batch.column('features'), path, lines)
      yield batch, lines, ids, present, values, click, purchase


def scenario_ids(directory: str, progress: bool = False) -> dict[int, int]:
  """{raw feature id of field 301: 1, 2, 3} in order of first appearance in the training
  skeleton's kept rows (SWR's re-indexing); reads only until the three are seen."""
  path = _require(directory, 'sample_skeleton_train')
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


def iter_raw_aliccp(directory: str, split: str, *, chunk_rows: int = 1 << 16,
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
  skeleton = _require(directory, f'sample_skeleton_{part}')
  common = _common_table(_require(directory, f'common_features_{part}'), progress)
  codes = scenario_ids(directory)
  raw_301 = np.array(list(codes), np.int64)
  slot_301 = SPARSE_FIELDS.index(SCENARIO_FIELD)
  for batch, lines, ids, present, values, click, purchase in _skeleton_chunks(
      skeleton, chunk_rows, progress):
    sample_id = _integers(batch.column('sample_id'), 'sample_id', skeleton, lines)
    _integers(batch.column('feature_num'), 'feature_num', skeleton, lines)
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

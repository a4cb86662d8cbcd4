"""Streaming reading of `field\\x02id\\x03value` feature lists (joined by \\x01), the encoding of
Alibaba's releases (Ali-CCP), as numpy columns with errors that name the file and line.

`read_blocks` streams a header-less CSV file as string columns with the line of each block's
first row; `parse` turns a column of feature lists into the ids (and values) of chosen fields.
Why on the bytes instead of a regex or a split per item: a common-features line of Ali-CCP has
~500 items of which ~16 are kept, so only those are converted; every item's structure is still
checked (a regex per item used 1.2-1.3x the CPU time on the skeleton, 2-core loaded machine).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from midpg_jax.errors import DataError

_INT_RE = '^[-+]?[0-9]+$'


@dataclasses.dataclass(frozen=True)
class FieldSet:
  """The fields `parse` keeps: `ids` (their feature ids), of which `dense` also give values."""

  ids: tuple[str, ...]
  dense: tuple[str, ...]

  def __post_init__(self):
    assert all(0 < len(f.encode()) <= 8 for f in self.ids) and set(self.dense) <= set(self.ids)
    # A field id as the little-endian uint64 of its bytes, zero-padded.
    keys = np.array([int.from_bytes(f.encode(), 'little') for f in self.ids], np.uint64)
    dense_slot = np.full(len(self.ids), -1)  # field code -> row of the dense value array
    dense_slot[[self.ids.index(f) for f in self.dense]] = np.arange(len(self.dense))
    object.__setattr__(self, 'keys', keys)
    object.__setattr__(self, 'order', np.argsort(keys))
    object.__setattr__(self, 'dense_slot', dense_slot)


def read_blocks(path: str, names, block_size: int, progress: bool):
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


def integers(text: pa.Array, what: str, path: str, lines: np.ndarray) -> np.ndarray:
  try:
    return pc.cast(text, pa.int64()).to_numpy()
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
    ok = pc.match_substring_regex(text, _INT_RE).to_numpy(zero_copy_only=False)
    if ok.all():  # digits only, so beyond the int64 range
      raise DataError(f'{path}: {what} out of the 64-bit integer range ({e})') from None
    i = int(np.argmin(ok))
    raise DataError(f'{path}, line {lines[i]}, {what}: {text[i].as_py()!r} is not an '
                    'integer') from None


def check_counts(counts: pa.Array, lists: pa.Array, path: str, lines: np.ndarray) -> None:
  """DataError at the first row whose item count (feature_num) is not the number of items of
  its feature list: a line cut or joined with another, or a list of another line. Call after
  `parse` has checked the lists' structure (one \\x02 per item)."""
  expected = integers(counts, 'feature_num', path, lines)
  found = pc.count_substring(lists, '\x02').to_numpy(zero_copy_only=False)
  bad = expected != found
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(f'{path}, line {lines[i]}: feature_num is {expected[i]} but the feature list '
                    f'has {found[i]} items')


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

  Decimal digits are summed column by column, which saves building strings for pyarrow;
  anything else (a sign, no digits, > 18 digits) goes through `integers` and its errors.
  """
  width = ends - starts
  if not len(width) or width.min() < 1 or width.max() > 18:
    return integers(_substrings(buf, starts, ends), 'feature id', path, lines)
  value = np.zeros(len(width), np.int64)
  last = len(buf) - 1
  for j in range(int(width.max())):
    inside = j < width
    digit = buf[np.minimum(starts + j, last)].astype(np.int64) - 48
    if ((digit < 0) | (digit > 9))[inside].any():
      return integers(_substrings(buf, starts, ends), 'feature id', path, lines)
    value = np.where(inside, value * 10 + digit, value)
  return value


def parse(lists: pa.Array, fields: 'FieldSet', path: str, lines: np.ndarray):
  """Parses feature lists (one per row) into the kept fields, the last occurrence of each.

  Returns ids (F, N) int64, present (F, N) bool and dense values (D, N) float64, with F =
  len(fields.ids), D = len(fields.dense) and 0 where a field is absent. Works on the bytes:
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
  slot = fields.order[np.minimum(np.searchsorted(fields.keys[fields.order], key),
                                 len(fields.keys) - 1)]
  kept = (fields.keys[slot] == key) & (width > 0) & (width <= 8)
  items, code = np.flatnonzero(kept), slot[kept]
  # The last item of each (row, field): the largest item index per (row, field) pair.
  pair = item_row[items] * len(fields.ids) + code
  latest = np.full(n * len(fields.ids), -1, np.int64)
  np.maximum.at(latest, pair, np.arange(len(items)))
  last = latest[latest >= 0]
  items, code = items[last], code[last]
  rows = item_row[items]
  where = lines[rows]
  ids = np.zeros((len(fields.ids), n), np.int64)
  present = np.zeros((len(fields.ids), n), bool)
  ids[code, rows] = _digits(buf, mid[items] + 1, pos[end_sep[items]], path, where)
  present[code, rows] = True
  values = np.zeros((len(fields.dense), n), np.float64)
  dense = fields.dense_slot[code] >= 0
  text = _substrings(buf, pos[end_sep[items[dense]]] + 1, end[items[dense]])
  try:
    v = pc.cast(text, pa.float64()).to_numpy()
  except pa.ArrowInvalid:
    v = np.array([_float_or_nan(t) for t in text.to_pylist()])
  if not np.isfinite(v).all():
    i = int(np.argmin(np.isfinite(v)))
    raise DataError(f'{path}, line {where[dense][i]}, field {fields.ids[code[dense][i]]!r}: '
                    f'value {text[i].as_py()!r} is not a finite number')
  values[fields.dense_slot[code[dense]], rows[dense]] = v
  return ids, present, values


def _float_or_nan(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    return float('nan')

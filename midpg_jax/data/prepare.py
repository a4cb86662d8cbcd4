"""Preparing a real dataset once: raw files -> model-ready columnar `.npy` files read by memory map.

Every real dataset (IAAC, Ali-CCP, AliExpress, Amazon, MIND, Douban) goes through the same steps;
the dataset modules only say which files to read and how to split them:

1. Read the raw files the user downloaded (`config.data.manual_dir`) with pyarrow's streaming CSV
   reader (or its JSON-lines reader), checking every row: a non-numeric id, a NaN or a label
   outside {0, 1} is an error naming the file, line and column. Rows can be filtered while
   streaming (Ali-CCP and AliExpress keep clicked rows only), so a large file never has to fit
   into memory whole.
   Why pyarrow: it is already installed (a TFDS dependency), parses CSV in C++ on all cores,
   streams, reads string and numeric columns alike, and its compute kernels (value counts, hash
   lookups, string splitting) keep the rest vectorised. Measured on 200k Ali-CCP-format rows
   (2 shared cores): pyarrow.csv.read_csv 0.5 s, np.loadtxt 1.4 s (numbers only, one dtype),
   Python's csv module + numpy 5.2 s. pandas is not installed and not needed.
2. Split into train / validation / test (by time where the data has time).
3. Build the columns (see `schema.py`), fitting everything on the training split only:
   vocabularies with `min_count` (id 0 = out of vocabulary; in multi-valued fields unknown tokens
   are dropped and 0 pads), dense scaling statistics, and the scenario mapping to [0, S) (a
   scenario value at validation/test time that was not seen in training, or is not in
   `scenario_values` when that is set, is an error naming the value and the file).
4. Write `feature_spec.json`, `meta.json`, `scenarios.json`, `vocab/<field>.npy` and
   `<split>/{cat,dense,scenario,label}.npy`, `<split>/multi/<field>.npy` into a temporary folder
   beside `prepared_dir`, then rename it into place: a failed run never leaves a half-written
   dataset and never touches one prepared earlier.

A prepared dataset is reused as long as the data config it was made from (everything in
`config.data` except `manual_dir`, `prepared_dir`, `progress` and `rebuild`) is unchanged; with
other settings it is an error (delete it, point `prepared_dir` elsewhere or set `rebuild=True`:
the new one then replaces the old only once it is complete).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import gzip
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from typing import Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
from tqdm.auto import tqdm

from midpg_jax.data.schema import Columns, FeatureSpec
from midpg_jax.errors import DataError  # noqa: F401  (re-exported: raised here)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ('train', 'validation', 'test')
# Config keys that say where things are or how to show progress, not what the data is.
_NOT_FINGERPRINTED = ('manual_dir', 'prepared_dir', 'progress', 'rebuild')


def base_config(name: str, **fields) -> ml_collections.ConfigDict:
  """The config.data keys every real dataset has, plus the dataset's own `fields`."""
  d = ml_collections.ConfigDict()
  d.name = name
  d.manual_dir = ''  # the folder with the user's downloaded files (see the module's INSTRUCTIONS)
  d.prepared_dir = ''  # '' = data_cache/<name> (relative to the working directory)
  d.progress = True  # tqdm bars while preparing
  d.rebuild = False  # prepare again even if prepared_dir holds this dataset
  d.min_count = 5  # ids seen fewer times in the training split share id 0 (out of vocabulary)
  d.dense_scaling = 'standard'  # 'standard' | 'minmax' | 'none', fitted on the training split
  d.scenario_values = ()  # () = the values in the training split, sorted; else the fixed list
  d.ids_numeric = True  # categorical columns hold integer ids (else any string)
  d.cat_columns = ()
  d.multi_columns = ml_collections.ConfigDict()  # name -> {sep, max_len, part_sep}
  d.dense_columns = ()
  for k, v in fields.items():
    d[k] = v
  return d


# ------------------------------------------------------------------------------------------------
# Locating the user's files.


def manual_dir(cfg, instructions: str) -> str:
  d = os.path.expanduser(str(cfg.manual_dir or ''))
  if not d:
    raise DataError(f'dataset {cfg.name!r}: config.data.manual_dir is not set. It must be the '
                    f'folder holding the files you downloaded.\n{instructions}')
  if not os.path.isdir(d):
    raise DataError(f'dataset {cfg.name!r}: config.data.manual_dir={d!r} is not a folder.\n'
                    f'{instructions}')
  return d


def find_files(directory: str, pattern: str, what: str, instructions: str = '') -> list[str]:
  """Sorted paths matching the glob `pattern` in `directory`; an error naming both when none do."""
  paths = sorted(p for p in glob.glob(os.path.join(directory, pattern)) if os.path.isfile(p))
  if not paths:
    try:
      present = sorted(os.listdir(directory))
    except OSError:
      present = None
    there = ('the folder does not exist' if present is None else
             f'it holds {present[:20]}' + (' ...' if len(present) > 20 else ''))
    raise DataError(f'{what}: expected a file matching {pattern!r} in {directory!r}, found none '
                    f'({there}).' + (f'\n{instructions}' if instructions else ''))
  return paths


# ------------------------------------------------------------------------------------------------
# Reading raw rows.

# Kinds of raw column and how they are parsed and checked.
#   id        integer id (int64); non-numeric or missing is an error
#   int       integer (timestamps, group ids); non-numeric or missing is an error
#   token     any string (ids given as strings, e.g. 'U479610'); '' is a value of its own
#   scenario  string; '' is an error
#   float     a number (dense features, ratings; float64); NaN, inf or missing is an error
#   label     0 or 1 (parsed as float64, so '1.0' is fine); anything else is an error
_ARROW_TYPES = {'id': pa.int64(), 'int': pa.int64(), 'token': pa.string(), 'scenario': pa.string(),
                'float': pa.float64(), 'label': pa.float64()}
_NUMERIC = ('id', 'int', 'float', 'label')


@dataclasses.dataclass
class RawTable:
  """Raw rows of one or more files: numeric columns as numpy, string columns as pyarrow.

  `file` and `line` say where every row came from, for error messages after rows were filtered
  and split.
  """

  columns: dict
  file: np.ndarray  # (N,) index into `files`
  line: np.ndarray  # (N,) 1-based line number in that file
  files: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.line)

  def where(self, i: int) -> str:
    return f'{self.files[self.file[i]]}, line {self.line[i]}'

  def take(self, index: np.ndarray) -> 'RawTable':
    index = np.asarray(index)
    if index.dtype == bool:
      index = np.flatnonzero(index)
    cols = {k: (v[index] if isinstance(v, np.ndarray) else v.take(pa.array(index, pa.int64())))
            for k, v in self.columns.items()}
    return RawTable(cols, self.file[index], self.line[index], self.files)

  @staticmethod
  def concat(tables: Sequence['RawTable']) -> 'RawTable':
    if len(tables) == 1:
      return tables[0]
    names = list(tables[0].columns)
    for t in tables[1:]:
      if list(t.columns) != names:
        raise ValueError(f'cannot concatenate tables with columns {names} and {list(t.columns)}')
    cols = {}
    for k in names:
      parts = [t.columns[k] for t in tables]
      if isinstance(parts[0], np.ndarray):
        cols[k] = np.concatenate(parts)
      else:
        cols[k] = pa.chunked_array([c for p in parts for c in p.chunks], type=parts[0].type)
    offsets = np.cumsum([0] + [len(t.files) for t in tables])
    return RawTable(cols, np.concatenate([t.file + o for t, o in zip(tables, offsets)]),
                    np.concatenate([t.line for t in tables]),
                    tuple(f for t in tables for f in t.files))

  def with_column(self, name: str, values) -> 'RawTable':
    return RawTable({**self.columns, name: values}, self.file, self.line, self.files)


def constant_column(value: str, n: int) -> pa.ChunkedArray:
  """A string column holding `value` n times (e.g. the country of an AliExpress file)."""
  return pa.chunked_array([pa.repeat(pa.scalar(value, pa.string()), n)], type=pa.string())


def _open_text(path: str):
  return gzip.open(path, 'rt', encoding='utf-8-sig') if path.endswith('.gz') else open(
      path, encoding='utf-8-sig', newline='')


def read_header(path: str, delimiter: str) -> list[str]:
  with _open_text(path) as f:
    line = f.readline()
  if not line:
    raise DataError(f'{path}: the file is empty (expected a header line)')
  return [c.strip() for c in next(csv.reader([line.rstrip('\r\n')], delimiter=delimiter))]


@contextlib.contextmanager
def _input_stream(path: str, progress: bool, desc: str):
  """A pyarrow stream of the file (gunzipped if .gz) with a byte-progress bar on the raw file."""
  size = os.path.getsize(path)
  bar = tqdm(total=size, unit='B', unit_scale=True, desc=desc, disable=not progress,
             dynamic_ncols=True, leave=False)
  raw = open(path, 'rb')

  class _Counting:  # file-like: counts the compressed bytes read for the bar
    closed = False

    def read(self, n=-1):
      data = raw.read(n)
      bar.update(len(data))
      return data

    def readable(self):
      return True

    def seekable(self):
      return False

    def close(self):
      self.closed = True

  stream = pa.PythonFile(_Counting(), mode='r')
  if path.endswith('.gz'):
    stream = pa.CompressedInputStream(stream, 'gzip')
  try:
    yield stream
  finally:
    bar.close()
    raw.close()


def _first(mask: np.ndarray) -> int:
  return int(np.argmax(mask))


def _check_batch(batch: pa.RecordBatch, kinds: Mapping[str, str], path: str,
                 first_line: int) -> None:
  """Raises DataError at the first bad value of the batch (rows start at line `first_line`)."""
  for name, kind in kinds.items():
    col = batch.column(name)
    if kind == 'token':
      continue
    if kind == 'scenario':
      bad = np.asarray(pc.equal(col, '').fill_null(True))
      if bad.any():
        raise DataError(f'{path}, line {first_line + _first(bad)}, column {name!r}: empty '
                        'scenario value')
      continue
    if col.null_count:
      i = _first(np.asarray(col.is_null()))
      what = 'an integer' if kind in ('id', 'int') else 'a number'
      raise DataError(f'{path}, line {first_line + i}, column {name!r}: missing or NaN value '
                      f'where {what} is expected')
    if kind in ('float', 'label'):
      v = col.to_numpy()
      bad = ~np.isfinite(v)
      if bad.any():
        i = _first(bad)
        raise DataError(f'{path}, line {first_line + i}, column {name!r}: {v[i]} is not a '
                        'finite number')
      if kind == 'label':
        bad = (v != 0) & (v != 1)
        if bad.any():
          i = _first(bad)
          raise DataError(f'{path}, line {first_line + i}, column {name!r}: label {v[i]:g} '
                          'is outside {0, 1}')


_INT_RE = re.compile(r'^\s*[-+]?\d+\s*$')


def _is_valid(text: str, kind: str) -> bool:
  if kind in ('id', 'int'):
    return bool(_INT_RE.match(text))
  try:
    float(text)
    return True
  except ValueError:
    return False


def _diagnose(path, kinds, read_options, parse_options, first_line, error) -> DataError:
  """Finds the value pyarrow could not convert by re-reading the columns as strings."""
  conv = pacsv.ConvertOptions(column_types={c: pa.string() for c in kinds},
                              include_columns=list(kinds), strings_can_be_null=False)
  try:
    with _input_stream(path, False, '') as stream:
      reader = pacsv.open_csv(stream, read_options=read_options, parse_options=parse_options,
                              convert_options=conv)
      offset = 0
      while True:
        try:
          batch = reader.read_next_batch()
        except StopIteration:
          break
        for name, kind in kinds.items():
          if kind not in _NUMERIC:
            continue
          values = batch.column(name).to_pylist()
          for i, text in enumerate(values):
            if text.strip() and not _is_valid(text, kind):
              what = 'an integer id' if kind in ('id', 'int') else 'a number'
              return DataError(f'{path}, line {first_line + offset + i}, column {name!r}: '
                               f'{text!r} is not {what}')
        offset += batch.num_rows
  except pa.ArrowInvalid as e:  # malformed rows (wrong number of fields, bad quoting)
    return DataError(f'{path}: cannot parse the file: {e}')
  return DataError(f'{path}: cannot parse the file: {error}')


def read_csv(path: str, kinds: Mapping[str, str], *, delimiter: str = ',',
             column_names: Sequence[str] | None = None,
             keep: Callable[[pa.RecordBatch], np.ndarray] | None = None,
             progress: bool = False, block_size: int = 1 << 22) -> RawTable:
  """Reads columns `kinds` ({name: kind}) of a delimited text file (optionally .gz), streaming.

  `column_names` is for files without a header line. `keep(batch) -> bool mask` drops rows while
  streaming (after they were checked).
  """
  header = list(column_names) if column_names else read_header(path, delimiter)
  missing = [c for c in kinds if c not in header]
  if missing:
    raise DataError(f'{path}: missing column(s) {missing}; the file has columns {header}')
  read_options = pacsv.ReadOptions(block_size=block_size,
                                   column_names=list(column_names) if column_names else None)
  parse_options = pacsv.ParseOptions(delimiter=delimiter)
  convert = pacsv.ConvertOptions(column_types={c: _ARROW_TYPES[k] for c, k in kinds.items()},
                                 include_columns=list(kinds), strings_can_be_null=False,
                                 quoted_strings_can_be_null=False)
  first_line = 1 if column_names else 2
  batches, lines, offset = [], [], 0
  with _input_stream(path, progress, f'read {os.path.basename(path)}') as stream:
    try:
      reader = pacsv.open_csv(stream, read_options=read_options, parse_options=parse_options,
                              convert_options=convert)
      while True:
        try:
          batch = reader.read_next_batch()
        except StopIteration:
          break
        _check_batch(batch, kinds, path, first_line + offset)
        line = np.arange(offset, offset + batch.num_rows, dtype=np.int64) + first_line
        offset += batch.num_rows
        if keep is not None:
          mask = np.asarray(keep(batch), bool)
          batch, line = batch.filter(pa.array(mask)), line[mask]
        batches.append(batch)
        lines.append(line)
    except pa.ArrowInvalid as e:
      raise _diagnose(path, kinds, read_options, parse_options, first_line, e) from None
  return _table(batches, lines, kinds, path)


def read_json_lines(path: str, kinds: Mapping[str, str], *, progress: bool = False) -> RawTable:
  """Reads fields `kinds` of a JSON-lines file (optionally .gz); other fields are ignored."""
  schema = pa.schema([(c, _ARROW_TYPES[k]) for c, k in kinds.items()])
  opts = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior='ignore')
  with _input_stream(path, progress, f'read {os.path.basename(path)}') as stream:
    try:
      table = pajson.read_json(stream, parse_options=opts)
    except pa.ArrowInvalid as e:
      raise DataError(f'{path}: cannot parse the JSON lines: {e}') from None
  for c in kinds:
    if table.num_rows and table.column(c).null_count == table.num_rows:
      raise DataError(f'{path}: missing field {c!r} (absent from every record)')
  batches = table.to_batches()
  offset, lines = 0, []
  for b in batches:
    _check_batch(b, kinds, path, 1 + offset)
    lines.append(np.arange(offset, offset + b.num_rows, dtype=np.int64) + 1)
    offset += b.num_rows
  return _table(batches, lines, kinds, path)


def _table(batches, lines, kinds, path) -> RawTable:
  cols = {}
  for name, kind in kinds.items():
    parts = [b.column(name) for b in batches]
    if kind in _NUMERIC:
      dtype = np.int64 if kind in ('id', 'int') else np.float64
      cols[name] = (np.concatenate([np.asarray(p.to_numpy(), dtype) for p in parts])
                    if parts else np.zeros(0, dtype))
    else:
      cols[name] = pa.chunked_array(parts, type=pa.string())
  line = np.concatenate(lines) if lines else np.zeros(0, np.int64)
  return RawTable(cols, np.zeros(len(line), np.int32), line, (path,))


# ------------------------------------------------------------------------------------------------
# Splitting.


def _cut(order: np.ndarray, fractions: Sequence[float]) -> dict[str, np.ndarray]:
  fractions = np.asarray(fractions, np.float64)
  if len(fractions) != 3 or (fractions < 0).any() or not math.isclose(fractions.sum(), 1.0):
    raise ValueError(f'split_fractions must be three fractions (train, validation, test) '
                     f'summing to 1, got {tuple(fractions)}')
  bounds = np.round(np.cumsum(np.concatenate([[0], fractions])) * len(order)).astype(int)
  return {s: np.sort(order[lo:hi]) for s, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:])}


def random_split(n: int, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
  """Row indices per split, a deterministic function of (n, fractions, seed)."""
  return _cut(np.random.default_rng([int(seed), 7]).permutation(n), fractions)


def time_split(times: np.ndarray, fractions: Sequence[float]) -> dict[str, np.ndarray]:
  """Row indices per split: the earliest `fractions[0]` of rows train, then validation, test.

  Every validation row is at or after every training row, every test row at or after every
  validation row (ties at a boundary go by row order).
  """
  return _cut(np.argsort(times, kind='stable'), fractions)


# ------------------------------------------------------------------------------------------------
# Columns.


@dataclasses.dataclass(frozen=True)
class MultiField:
  name: str
  sep: str  # tokens are separated by this string
  max_len: int  # keep the first max_len known tokens, pad with 0
  part_sep: str = ''  # if set, a token is only its part before this string ('cat:p1,p2' -> 'cat')


@dataclasses.dataclass(frozen=True)
class Schema:
  """The roles of a dataset's columns (after the dataset module derived any it needs)."""

  scenario: str
  label: str
  cat: tuple[str, ...] = ()
  multi: tuple[MultiField, ...] = ()
  dense: tuple[str, ...] = ()
  ids_numeric: bool = True  # cat columns hold integer ids ('id') rather than strings ('token')

  def kinds(self, exclude: Iterable[str] = ()) -> dict[str, str]:
    """{raw column: kind} to read, leaving out derived columns `exclude`."""
    kinds = {c: 'id' if self.ids_numeric else 'token' for c in self.cat}
    kinds.update({m.name: 'token' for m in self.multi})
    kinds.update({c: 'float' for c in self.dense})
    kinds.update({self.scenario: 'scenario', self.label: 'label'})
    return {c: k for c, k in kinds.items() if c not in set(exclude)}


def schema_from_config(cfg) -> Schema:
  """The Schema of config.data fields cat_columns, multi_columns, dense_columns, scenario_field,
  label; the scenario field is never also a categorical feature."""
  multi = tuple(MultiField(name, str(m.sep), int(m.max_len), str(m.get('part_sep', '')))
                for name, m in sorted(dict(cfg.get('multi_columns', {})).items()))
  for m in multi:
    if m.max_len <= 0 or not m.sep:
      raise ValueError(f'config.data.multi_columns.{m.name} needs sep and max_len > 0')
  return Schema(scenario=str(cfg.scenario_field), label=str(cfg.label),
                cat=tuple(c for c in cfg.cat_columns if c != cfg.scenario_field),
                multi=multi, dense=tuple(cfg.get('dense_columns', ())),
                ids_numeric=bool(cfg.get('ids_numeric', True)))


def build_vocab(values, min_count: int) -> pa.Array:
  """Distinct values with at least `min_count` occurrences, sorted (id = position + 1)."""
  arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
  counts = pc.value_counts(arr)
  keep = pc.greater_equal(counts.field('counts'), max(1, int(min_count)))
  vocab = pc.filter(counts.field('values'), keep)
  vocab = pc.drop_null(vocab)
  if pa.types.is_string(vocab.type):
    vocab = pc.filter(vocab, pc.not_equal(vocab, ''))  # '' never gets an id in multi fields
  return pc.take(vocab, pc.sort_indices(vocab))


def lookup(values, vocab: pa.Array) -> np.ndarray:
  """int32 ids: 1 + position in `vocab`, 0 when absent."""
  arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
  idx = pc.index_in(arr, value_set=vocab)
  if isinstance(idx, pa.ChunkedArray):
    idx = idx.combine_chunks() if idx.num_chunks else pa.array([], pa.int32())
  return (np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), np.int32) + 1)


def tokenize(values: pa.ChunkedArray, field: MultiField) -> tuple[pa.Array, np.ndarray]:
  """(flat tokens, tokens per row) of a multi-valued string column."""
  lists = pc.split_pattern(values, field.sep)
  if isinstance(lists, pa.ChunkedArray):
    lists = (lists.combine_chunks() if lists.num_chunks
             else pa.array([], pa.list_(pa.string())))
  flat = pc.list_flatten(lists)
  if field.part_sep:
    flat = pc.list_element(pc.split_pattern(flat, field.part_sep, max_splits=1), 0)
  lengths = np.asarray(pc.list_value_length(lists).fill_null(0).to_numpy(), np.int64)
  return flat, lengths


def pad_ids(ids: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
  """(N, max_len) int32: each row's nonzero ids in order, the first max_len of them, 0-padded."""
  n = len(lengths)
  rows = np.repeat(np.arange(n), lengths)
  known = ids > 0
  rows, ids = rows[known], ids[known]
  counts = np.bincount(rows, minlength=n)
  starts = np.cumsum(counts) - counts
  pos = np.arange(len(ids)) - starts[rows]
  keep = pos < max_len
  out = np.zeros((n, max_len), np.int32)
  out[rows[keep], pos[keep]] = ids[keep]
  return out


def _sorted_values(values: Iterable[str]) -> list[str]:
  values = list(values)
  try:
    return sorted(values, key=int)
  except ValueError:
    return sorted(values)


def scenario_names(field: str, values: Sequence[str]) -> tuple[str, ...]:
  """'news' for string values, '301=1' for numeric ones (a bare number reads badly in tables)."""
  return tuple(f'{field}={v}' if _is_valid(v, 'float') or v == 'overall' else v for v in values)


def map_scenarios(raw: Mapping[str, RawTable], field: str,
                  configured: Sequence) -> tuple[list[str], dict[str, np.ndarray]]:
  """(scenario values in id order, {split: int32 ids}); unseen values are errors."""
  if configured:
    values = [str(v) for v in configured]
    if len(set(values)) != len(values):
      raise ValueError(f'config.data.scenario_values has duplicates: {values}')
    source = f'config.data.scenario_values {values}'
  else:
    values = _sorted_values(pc.unique(raw['train'].columns[field]).to_pylist())
    source = f'the training split (values {values})'
  value_set = pa.array(values, pa.string())
  ids = {}
  for split, table in raw.items():
    idx = lookup(table.columns[field], value_set) - 1
    if (idx < 0).any():
      i = _first(idx < 0)
      v = table.columns[field][i].as_py()
      raise DataError(f'{split} split: scenario value {v!r} of field {field!r} ({table.where(i)}) '
                      f'does not occur in {source}')
    ids[split] = idx.astype(np.int32)
  return values, ids


def _dense_stats(train: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
  """(shift, scale) with scaled = (x - shift) / scale, from the training split."""
  d = train.shape[1]
  if scaling == 'none' or d == 0:
    return np.zeros(d), np.ones(d)
  if scaling == 'standard':
    shift, scale = train.mean(axis=0), train.std(axis=0)
  elif scaling == 'minmax':
    shift, scale = train.min(axis=0), train.max(axis=0) - train.min(axis=0)
  else:
    raise ValueError(f"unknown config.data.dense_scaling {scaling!r}; choose 'standard', "
                     "'minmax' or 'none'")
  return shift, np.where(scale > 1e-12, scale, 1.0)


@dataclasses.dataclass
class Prepared:
  spec: FeatureSpec
  splits: dict[str, Columns]
  vocabs: dict[str, pa.Array]
  scenario_values: list[str]
  dense_stats: dict[str, dict[str, float]]


def to_columnar(raw: Mapping[str, RawTable], schema: Schema, cfg,
                progress: bool = False) -> Prepared:
  """Model-ready columns of every split, with every statistic fitted on `raw['train']`."""
  for split in SPLITS:
    if split not in raw:
      raise ValueError(f'missing split {split!r}')
    if len(raw[split]) == 0:
      files = sorted(set(raw[split].files))
      raise DataError(f'dataset {cfg.name!r}: the {split} split is empty (source: {files}); '
                      'check the files and the split settings')
  train = raw['train']
  steps = len(schema.cat) + len(schema.multi) + 2
  bar = tqdm(total=steps, desc=f'columns {cfg.name}', disable=not progress, leave=False)
  values, scen = map_scenarios(raw, schema.scenario, tuple(cfg.get('scenario_values', ())))
  bar.update(1)
  min_count = int(cfg.min_count)
  vocabs = {}
  cat = {s: np.zeros((len(raw[s]), len(schema.cat)), np.int32) for s in SPLITS}
  for j, name in enumerate(schema.cat):
    vocabs[name] = build_vocab(train.columns[name], min_count)
    for s in SPLITS:
      cat[s][:, j] = lookup(raw[s].columns[name], vocabs[name])
    bar.update(1)
  multi = {s: {} for s in SPLITS}
  for field in schema.multi:
    tokens = {s: tokenize(raw[s].columns[field.name], field) for s in SPLITS}
    vocabs[field.name] = build_vocab(tokens['train'][0], min_count)
    for s in SPLITS:
      flat, lengths = tokens[s]
      multi[s][field.name] = pad_ids(lookup(flat, vocabs[field.name]), lengths, field.max_len)
    bar.update(1)
  scaling = str(cfg.get('dense_scaling', 'standard'))
  dense = {s: np.stack([raw[s].columns[c] for c in schema.dense], axis=1) if schema.dense
           else np.zeros((len(raw[s]), 0)) for s in SPLITS}
  shift, scale = _dense_stats(dense['train'], scaling)
  bar.update(1)
  bar.close()
  out = {}
  for s in SPLITS:
    out[s] = {'cat': cat[s], 'dense': ((dense[s] - shift) / scale).astype(np.float32),
              'scenario': scen[s], 'label': np.asarray(raw[s].columns[schema.label], np.float32)}
    if schema.multi:
      out[s]['multi'] = multi[s]
  spec = FeatureSpec(
      cat_names=schema.cat,
      cat_vocab_sizes=tuple(len(vocabs[c]) + 1 for c in schema.cat),
      dense_names=schema.dense,
      scenario_names=scenario_names(schema.scenario, values),
      multi_names=tuple(m.name for m in schema.multi),
      multi_vocab_sizes=tuple(len(vocabs[m.name]) + 1 for m in schema.multi),
      multi_max_lens=tuple(m.max_len for m in schema.multi))
  stats = {c: {'shift': float(a), 'scale': float(b), 'scaling': scaling}
           for c, a, b in zip(schema.dense, shift, scale)}
  return Prepared(spec, out, vocabs, values, stats)


# ------------------------------------------------------------------------------------------------
# Storage: a prepared folder, its fingerprint, writing and memory-mapped loading.


def prepared_path(cfg) -> str:
  return os.path.expanduser(str(cfg.get('prepared_dir', '') or
                                os.path.join('data_cache', str(cfg.name))))


def fingerprinted_config(cfg) -> dict:
  d = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
  return {k: v for k, v in d.items() if k not in _NOT_FINGERPRINTED}


def fingerprint(cfg) -> str:
  text = json.dumps({'format_version': FORMAT_VERSION, 'config': fingerprinted_config(cfg)},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def _split_summary(cols: Columns, spec: FeatureSpec) -> dict:
  s, y = cols['scenario'], cols['label']
  rows = np.bincount(s, minlength=spec.num_scenarios)
  pos = np.bincount(s, weights=y, minlength=spec.num_scenarios)
  return {'rows': int(len(y)), 'positives': int(y.sum()),
          'per_scenario': {n: {'rows': int(r), 'positives': int(p)}
                           for n, r, p in zip(spec.scenario_names, rows, pos)}}


def write_prepared(directory: str, prepared: Prepared, cfg, sources: Sequence[str],
                   seconds: float) -> None:
  os.makedirs(os.path.join(directory, 'vocab'), exist_ok=True)
  for split, cols in prepared.splits.items():
    os.makedirs(os.path.join(directory, split), exist_ok=True)
    for key, arr in cols.items():
      if key == 'multi':
        os.makedirs(os.path.join(directory, split, 'multi'), exist_ok=True)
        for name, m in arr.items():
          np.save(os.path.join(directory, split, 'multi', f'{name}.npy'), m)
      else:
        np.save(os.path.join(directory, split, f'{key}.npy'), arr)
  for name, vocab in prepared.vocabs.items():
    values = vocab.to_numpy(zero_copy_only=False)
    if values.dtype == object:
      values = values.astype(str)
    np.save(os.path.join(directory, 'vocab', f'{name}.npy'), values)
  with open(os.path.join(directory, 'feature_spec.json'), 'w') as f:
    f.write(prepared.spec.to_json())
  with open(os.path.join(directory, 'scenarios.json'), 'w') as f:
    json.dump({'field': str(cfg.scenario_field),
               'mapping': {v: i for i, v in enumerate(prepared.scenario_values)},
               'names': list(prepared.spec.scenario_names)}, f, indent=1, ensure_ascii=False)
  meta = {'format_version': FORMAT_VERSION, 'name': str(cfg.name), 'fingerprint': fingerprint(cfg),
          'config': fingerprinted_config(cfg), 'prepared_at': time.strftime('%Y-%m-%d %H:%M:%S'),
          'seconds': round(seconds, 2),
          'sources': [{'path': os.path.abspath(p), 'bytes': os.path.getsize(p)} for p in sources],
          'splits': {s: _split_summary(c, prepared.spec) for s, c in prepared.splits.items()},
          'dense_stats': prepared.dense_stats}
  # meta.json last: its presence marks a complete folder.
  with open(os.path.join(directory, 'meta.json'), 'w') as f:
    json.dump(meta, f, indent=1, default=str, ensure_ascii=False)


def _load_npy(path: str) -> np.ndarray:
  arr = np.load(path, mmap_mode='r')
  return np.load(path) if arr.size == 0 else arr  # an empty array cannot be memory-mapped


def read_meta(directory: str) -> dict | None:
  try:
    with open(os.path.join(directory, 'meta.json')) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def load_prepared(directory: str) -> tuple[FeatureSpec, dict[str, Columns]]:
  """The FeatureSpec and the splits of a prepared folder, every column memory-mapped."""
  with open(os.path.join(directory, 'feature_spec.json')) as f:
    spec = FeatureSpec.from_json(f.read())
  splits = {}
  for split in SPLITS:
    d = os.path.join(directory, split)
    cols = {k: _load_npy(os.path.join(d, f'{k}.npy'))
            for k in ('cat', 'dense', 'scenario', 'label')}
    if spec.multi_names:
      cols['multi'] = {n: _load_npy(os.path.join(d, 'multi', f'{n}.npy'))
                       for n in spec.multi_names}
    splits[split] = cols
  return spec, splits


def _config_diff(old: Mapping, new: Mapping) -> list[str]:
  keys = sorted(set(old) | set(new))
  norm = lambda v: json.loads(json.dumps(v, default=str))  # tuples vs lists
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys
          if norm(old.get(k)) != norm(new.get(k))]


def load_or_prepare(cfg, read_splits: Callable[[], Mapping[str, RawTable]],
                    schema: Schema) -> tuple[FeatureSpec, dict[str, Columns]]:
  """Loads the prepared dataset of `cfg`, preparing it first when there is none.

  `read_splits()` returns the raw {'train', 'validation', 'test'} tables.
  """
  target = prepared_path(cfg)
  fp = fingerprint(cfg)
  rebuild = bool(cfg.get('rebuild', False))
  meta = read_meta(target)
  if meta is not None and not rebuild:
    if meta.get('fingerprint') == fp:
      log.info('using the dataset prepared in %s', target)
      return load_prepared(target)
    diff = _config_diff(meta.get('config', {}), fingerprinted_config(cfg))
    raise DataError(f'{target} holds dataset {meta.get("name")!r} prepared with other settings '
                    f'({"; ".join(diff) or "another format version"}). Delete it, set '
                    'config.data.prepared_dir to another folder, or set config.data.rebuild=True '
                    '(it is replaced only once the new one is complete).')
  if meta is None and os.path.isdir(target) and os.listdir(target):
    raise DataError(f'{target} exists and is not a prepared dataset (no meta.json): set '
                    'config.data.prepared_dir to a new or empty folder')
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  progress = bool(cfg.get('progress', True))
  start = time.perf_counter()
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.tmp-', dir=parent)
  try:
    raw = read_splits()
    prepared = to_columnar(raw, schema, cfg, progress)
    sources = sorted({f for t in raw.values() for f in t.files})
    write_prepared(tmp, prepared, cfg, sources, time.perf_counter() - start)
    _move_into_place(tmp, target, fp)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  seconds = time.perf_counter() - start
  msg = (f'prepared {cfg.name} in {seconds:.1f}s into {target}: ' + ', '.join(
      f'{s} {len(prepared.splits[s]["label"]):,} rows' for s in SPLITS))
  log.info(msg)
  if progress:
    tqdm.write(msg)
  return load_prepared(target)


def _move_into_place(tmp: str, target: str, fp: str) -> None:
  old = None
  if os.path.isdir(target) and os.listdir(target):  # rebuild: keep the old one until the swap
    old = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.old-',
                           dir=os.path.dirname(os.path.abspath(target)))
    os.rmdir(old)
    os.rename(target, old)
  try:
    os.rename(tmp, target)
  except OSError:
    if old is not None:
      os.rename(old, target)
      raise
    meta = read_meta(target)  # another process finished the same dataset first
    if meta is None or meta.get('fingerprint') != fp:
      raise
    shutil.rmtree(tmp, ignore_errors=True)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)

"""Raw values -> model columns: the one place where that happens.

Preparation's second pass (`prepare.py`) and prediction on new raw rows both call
`Encoder.encode`, so a row is encoded the same way in both. The Encoder holds what preparation
fitted on the training split (`fit.py`): vocabularies (id = 1 + position in the sorted vocabulary,
0 = out of vocabulary), multi-value tokenisation, dense scaling and the scenario mapping. It is
saved into a prepared folder as `encoder.json` + `vocab/<field>.npy`.

`Encoder.fingerprint` hashes all of that: the prepared dataset's FeatureSpec, and so every run
trained on it, carries it (`FeatureSpec.encoder_fingerprint`), and raw rows are only encoded for a
run by the Encoder it was trained with (`schema.check_same_encoding`).

Rows given in memory (`encode_rows`: a pandas DataFrame or a dict of columns) are checked as a
file's are (reader.py): a value that is not of its column's kind, NaN, a missing id or an unknown
scenario is a DataError naming the column and the row (0-based, as the DataFrame counts).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from midpg_jax.data import reader
from midpg_jax.data.schema import Columns, FeatureSpec
from midpg_jax.errors import DataError

ENCODER_FILE = 'encoder.json'
# Integer vocabularies spanning at most this many values are looked up in a dense table (one
# numpy gather, ~10x faster than hashing); wider ones through pyarrow's hash lookup.
_DENSE_TABLE_MAX_SPAN = 1 << 24


@dataclasses.dataclass(frozen=True)
class MultiField:
  name: str
  sep: str  # tokens are separated by this string
  max_len: int  # keep the first max_len known tokens, pad with 0
  part_sep: str = ''  # if set, a token is only its part before this string ('cat:p1,p2' -> 'cat')


def _as_arrow(values, type_: pa.DataType) -> pa.Array:
  if isinstance(values, pa.ChunkedArray):
    values = values.combine_chunks() if values.num_chunks else pa.array([], type_)
  if not isinstance(values, pa.Array):
    values = pa.array(np.asarray(values))
  return values if values.type == type_ else pc.cast(values, type_)


class IdLookup:
  """ids = 1 + position in a sorted vocabulary, 0 when absent."""

  def __init__(self, vocab: np.ndarray):
    self.vocab = vocab
    self.table = None
    if vocab.dtype.kind in 'iu' and len(vocab) and vocab[-1] - vocab[0] < _DENSE_TABLE_MAX_SPAN:
      self.low = int(vocab[0])
      self.table = np.zeros(int(vocab[-1]) - self.low + 1, np.int32)
      self.table[vocab - self.low] = np.arange(1, len(vocab) + 1, dtype=np.int32)
    else:
      self.value_set = pa.array(vocab)

  def __call__(self, values) -> np.ndarray:
    if self.table is not None:
      v = _as_arrow(values, pa.int64()).to_numpy(zero_copy_only=False)
      if self.low:
        v = v - self.low
      out = np.take(self.table, v, mode='clip')
      if len(v) and (v.min() < 0 or v.max() >= len(self.table)):  # 2 reductions < 1 mask (1.6x)
        out[(v < 0) | (v >= len(self.table))] = 0
      return out
    arr = _as_arrow(values, self.value_set.type)
    idx = pc.index_in(arr, value_set=self.value_set)
    return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), np.int32) + 1


def tokenize(values, field: MultiField) -> tuple[pa.Array, np.ndarray]:
  """(flat tokens, tokens per row) of a multi-valued string column."""
  lists = pc.split_pattern(_as_arrow(values, pa.string()), field.sep)
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


def scenario_names(field: str, values: Sequence[str]) -> tuple[str, ...]:
  """'news' for string values, '301=1' for numeric ones (a bare number reads badly in tables)."""
  def numeric(v):
    try:
      float(v)
      return True
    except ValueError:
      return v == 'overall'
  return tuple(f'{field}={v}' if numeric(v) else v for v in values)


def rows_as_columns(rows) -> dict:
  """{name: values} of a pandas DataFrame or a mapping of columns (a scalar: one row)."""
  if hasattr(rows, 'columns') and hasattr(rows, 'to_numpy'):  # a pandas DataFrame
    return {str(name): rows[name].to_numpy() for name in rows.columns}
  if isinstance(rows, Mapping):
    return {str(k): v if hasattr(v, '__len__') and not isinstance(v, str) else [v]
            for k, v in rows.items()}
  raise DataError(f'rows must be a pandas DataFrame or a dict of columns, got '
                  f'{type(rows).__name__}')


# What a value of each reader kind must be, for the messages of `_column_of_rows`.
_KIND_WORDS = {'id': 'an integer id', 'int': 'an integer', 'float': 'a number',
               'label': 'a label 0 or 1', 'token': 'a string', 'str': 'a string',
               'scenario': 'a scenario value'}
_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError)


def _column_of_rows(values, kind: str, name: str, source: str) -> pa.Array:
  """A column given in memory as its kind's Arrow type; NaN and None read as missing (pandas'
  convention), which check_batch then refuses where a value is required. A value that does not
  convert (a string in a numeric column) is a DataError naming its row."""
  type_ = reader.ARROW_TYPES[kind]
  arrow = isinstance(values, (pa.Array, pa.ChunkedArray))
  try:
    return _as_arrow(values if arrow else pa.array(np.asarray(values), from_pandas=True), type_)
  except _CONVERSION_ERRORS:
    pass  # found below, value by value (only on this error path)
  items = values.to_pylist() if arrow else np.asarray(values, dtype=object).tolist()
  for i, v in enumerate(items):
    try:
      _as_arrow(pa.array([v], from_pandas=True), type_)
    except _CONVERSION_ERRORS:
      raise DataError(f'{source}, row {i}, column {name!r}: {v!r} is not '
                      f'{_KIND_WORDS[kind]}') from None
  raise DataError(f'{source}, column {name!r}: its values do not convert to {type_} together '
                  '(mixed types?)')


@dataclasses.dataclass
class Encoder:
  """The transforms preparation fitted on the training split. Saved into / loaded from a prepared
  dataset folder."""

  scenario_field: str
  scenario_values: tuple[str, ...]  # raw values in id order
  label_column: str | None
  cat_names: tuple[str, ...]
  ids_numeric: bool
  multi: tuple[MultiField, ...]
  dense_names: tuple[str, ...]
  dense_shift: np.ndarray  # (D,) float64: scaled = (x - shift) / scale
  dense_scale: np.ndarray  # (D,)
  dense_scaling: str
  vocabs: dict[str, np.ndarray]  # field -> sorted distinct values (int64 or str)

  def __post_init__(self):
    self._lookups = {name: IdLookup(v) for name, v in self.vocabs.items()}
    self._scenarios = pa.array(list(self.scenario_values), pa.string())

  @property
  def spec(self) -> FeatureSpec:
    return FeatureSpec(
        cat_names=self.cat_names,
        cat_vocab_sizes=tuple(len(self.vocabs[c]) + 1 for c in self.cat_names),
        dense_names=self.dense_names,
        scenario_names=scenario_names(self.scenario_field, self.scenario_values),
        multi_names=tuple(m.name for m in self.multi),
        multi_vocab_sizes=tuple(len(self.vocabs[m.name]) + 1 for m in self.multi),
        multi_max_lens=tuple(m.max_len for m in self.multi),
        encoder_fingerprint=self.fingerprint)

  def _settings(self) -> dict:
    """Everything but the vocabularies, as encoder.json holds it."""
    return {'scenario_field': self.scenario_field, 'scenario_values': list(self.scenario_values),
            'label_column': self.label_column, 'cat_names': list(self.cat_names),
            'ids_numeric': self.ids_numeric, 'multi': [dataclasses.asdict(m) for m in self.multi],
            'dense_names': list(self.dense_names), 'dense_shift': self.dense_shift.tolist(),
            'dense_scale': self.dense_scale.tolist(), 'dense_scaling': self.dense_scaling}

  @functools.cached_property
  def fingerprint(self) -> str:
    """sha256 of what maps raw values to model columns (all but the label column): encoders of
    equal fingerprints encode every row alike. The same for the fitted Encoder and the one loaded
    back (JSON keeps float64 exactly, .npy the vocabularies' dtypes)."""
    settings = {k: v for k, v in self._settings().items() if k != 'label_column'}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in sorted(self.vocabs):
      vocab = np.ascontiguousarray(self.vocabs[name])
      h.update(f'{name}:{vocab.dtype.str}:{len(vocab)}:'.encode())
      h.update(vocab.tobytes())
    return h.hexdigest()

  @property
  def raw_kinds(self) -> dict[str, str]:
    """{raw column: reader kind} of the columns `encode` reads (reader.py's kinds)."""
    kinds = {c: 'id' if self.ids_numeric else 'token' for c in self.cat_names}
    kinds.update({m.name: 'token' for m in self.multi})
    kinds.update({c: 'float' for c in self.dense_names})
    kinds[self.scenario_field] = 'scenario'
    if self.label_column:
      kinds[self.label_column] = 'label'
    return kinds

  def scenario_ids(self, values, *, source: str = '<rows>', first_line: int = 1,
                   lines: np.ndarray | None = None, unit: str = 'line') -> np.ndarray:
    arr = _as_arrow(values, pa.string())
    idx = np.asarray(pc.index_in(arr, value_set=self._scenarios).fill_null(-1)
                     .to_numpy(zero_copy_only=False), np.int32)
    if (idx < 0).any():
      i = int(np.argmax(idx < 0))
      line = int(lines[i]) if lines is not None else first_line + i
      raise DataError(f'{source}, {unit} {line}: scenario value {arr[i].as_py()!r} of field '
                      f'{self.scenario_field!r} is not one of the prepared dataset\'s scenarios '
                      f'{list(self.scenario_values)}')
    return idx

  def encode(self, columns: Mapping, *, source: str = '<rows>', first_line: int = 1,
             with_label: bool = True, lines: np.ndarray | None = None,
             unit: str = 'line') -> Columns:
    """Model columns of raw `columns` ({raw name: values}) whose values were checked
    (reader.check_batch); `lines` (N,) overrides the line numbers `first_line`,
    `first_line + 1`, ... that error messages name ('<unit> <n>')."""
    missing = [c for c in self.raw_kinds if c not in columns
               and (with_label or c != self.label_column)]
    if missing:
      raise DataError(f'{source}: missing column(s) {missing}')
    n = len(columns[self.scenario_field])
    cat = np.empty((n, len(self.cat_names)), np.int32)  # (N, F), every column set below
    for j, name in enumerate(self.cat_names):
      cat[:, j] = self._lookups[name](columns[name])
    # (N, D) float32, scaled in float64 column by column (3x faster than stacking the float64
    # columns first; the same values).
    dense = np.empty((n, len(self.dense_names)), np.float32)
    scaled = np.empty(n)
    for j, c in enumerate(self.dense_names):
      np.subtract(_as_arrow(columns[c], pa.float64()).to_numpy(zero_copy_only=False),
                  self.dense_shift[j], out=scaled)
      dense[:, j] = np.divide(scaled, self.dense_scale[j], out=scaled)
    out = {'cat': cat, 'dense': dense,
           'scenario': self.scenario_ids(columns[self.scenario_field], source=source,
                                         first_line=first_line, lines=lines, unit=unit)}
    if with_label:
      out['label'] = _as_arrow(columns[self.label_column], pa.float32()).to_numpy(
          zero_copy_only=False)
    if self.multi:
      out['multi'] = {}
      for m in self.multi:
        flat, lengths = tokenize(columns[m.name], m)
        out['multi'][m.name] = pad_ids(self._lookups[m.name](flat), lengths, m.max_len)
    return out

  def encode_rows(self, rows, *, source: str = '<rows>') -> Columns:
    """Model columns (no label) of raw rows in memory: a pandas DataFrame or {column: values},
    each column checked as a file's (a DataError names the column and the 0-based row)."""
    columns = rows_as_columns(rows)
    kinds = {c: k for c, k in self.raw_kinds.items() if c != self.label_column and c in columns}
    checked = dict(columns)
    for name, kind in kinds.items():
      checked[name] = _column_of_rows(columns[name], kind, name, source)
    lengths = {name: len(checked[name]) for name in kinds}
    if len(set(lengths.values())) > 1:
      raise DataError(f'{source}: the columns differ in length ({lengths})')
    reader.check_batch(checked, kinds, source, 0, unit='row')
    return self.encode(checked, source=source, first_line=0, with_label=False, unit='row')

  # ----------------------------------------------------------------------------------------------
  # Storage.

  def save(self, prepared_dir: str) -> None:
    os.makedirs(os.path.join(prepared_dir, 'vocab'), exist_ok=True)
    for name, vocab in self.vocabs.items():
      buffer = io.BytesIO()  # written with f.write: numpy's own writes drop a full disk's errno
      np.save(buffer, vocab)
      with open(os.path.join(prepared_dir, 'vocab', f'{name}.npy'), 'wb') as f:
        f.write(buffer.getbuffer())
    with open(os.path.join(prepared_dir, ENCODER_FILE), 'w') as f:
      json.dump(self._settings(), f, indent=1, ensure_ascii=False)

  @classmethod
  def load(cls, prepared_dir: str) -> 'Encoder':
    path = os.path.join(prepared_dir, ENCODER_FILE)
    try:
      with open(path) as f:
        d = json.load(f)
    except FileNotFoundError:
      raise DataError(f'{prepared_dir} holds no {ENCODER_FILE}: not a prepared dataset, or one '
                      'prepared by an older version (prepare it again)') from None
    multi = tuple(MultiField(**m) for m in d['multi'])
    names = list(d['cat_names']) + [m.name for m in multi]
    vocabs = {n: np.load(os.path.join(prepared_dir, 'vocab', f'{n}.npy')) for n in names}
    return cls(scenario_field=d['scenario_field'],
               scenario_values=tuple(d['scenario_values']), label_column=d['label_column'],
               cat_names=tuple(d['cat_names']), ids_numeric=bool(d['ids_numeric']), multi=multi,
               dense_names=tuple(d['dense_names']),
               dense_shift=np.asarray(d['dense_shift'], np.float64).reshape(-1),
               dense_scale=np.asarray(d['dense_scale'], np.float64).reshape(-1),
               dense_scaling=d['dense_scaling'], vocabs=vocabs)

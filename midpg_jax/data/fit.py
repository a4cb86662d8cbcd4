"""Fitting the Encoder on the training split, chunk by chunk (preparation's first pass).

Memory is bounded by the vocabularies, not by the number of rows:
* `IdCounts` counts integer ids in a dense array over their range while that range is below
  `DENSE_SPAN` values (8 bytes per value of the range; ~10x faster than hashing), else (and for
  string tokens) as hashed (value, count) pairs: about 16-40 bytes per distinct value;
* `Moments` keeps count, mean, M2, min and max per dense column (merged chunk by chunk, Chan et al.);
* scenario values are counted per split with the place each was first seen.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from midpg_jax.data import encode
from midpg_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)
DENSE_SPAN = 1 << 22


class IdCounts:
  """Occurrences of each distinct value of a column, added chunk by chunk."""

  def __init__(self):
    self.low = None
    self.dense = None  # np.int64 counts of values low .. low + len - 1 (integer mode)
    self.pending = []  # [(values pa.Array, counts np.ndarray)] (hashed mode)
    self.pending_len = 0
    self.merged_len = 0

  def add(self, values) -> None:
    arr = encode._as_arrow(values, values.type if isinstance(values, (pa.Array, pa.ChunkedArray))
                           else pa.int64())
    if len(arr) == 0:
      return
    if pa.types.is_integer(arr.type) and not self.pending:
      v = arr.to_numpy(zero_copy_only=False)
      lo, hi = int(v.min()), int(v.max())
      low = lo if self.low is None else min(lo, self.low)
      high = hi if self.dense is None else max(hi, self.low + len(self.dense) - 1)
      if high - low < DENSE_SPAN:
        if self.dense is None:
          self.low, self.dense = low, np.zeros(high - low + 1, np.int64)
        elif low < self.low or high >= self.low + len(self.dense):
          grown = np.zeros(high - low + 1, np.int64)
          grown[self.low - low:self.low - low + len(self.dense)] = self.dense
          self.low, self.dense = low, grown
        self.dense += np.bincount(v - self.low, minlength=len(self.dense))
        return
      self._to_hashed()
    vc = pc.value_counts(arr)
    self.pending.append((vc.field('values'), vc.field('counts').to_numpy()))
    self.pending_len += len(vc)
    if self.pending_len > 2 * self.merged_len + (1 << 20):
      self._merge()

  def _to_hashed(self):
    if self.dense is not None:
      nz = np.flatnonzero(self.dense)
      self.pending.append((pa.array(nz + self.low, pa.int64()), self.dense[nz]))
      self.pending_len += len(nz)
      self.dense = None

  def _merge(self):
    values = pa.concat_arrays([v for v, _ in self.pending])
    counts = np.concatenate([c for _, c in self.pending])
    grouped = pa.table({'v': values, 'c': counts}).group_by('v').aggregate([('c', 'sum')])
    self.pending = [(grouped.column('v').combine_chunks(), grouped.column('c_sum').to_numpy())]
    self.merged_len = self.pending_len = grouped.num_rows

  def vocabulary(self, min_count: int) -> np.ndarray:
    """Sorted distinct values seen at least `min_count` times ('' never gets an id)."""
    min_count = max(1, int(min_count))
    if self.dense is not None:
      return (np.flatnonzero(self.dense >= min_count) + self.low).astype(np.int64)
    if not self.pending:
      return np.zeros(0, np.int64)
    self._merge()
    values, counts = self.pending[0]
    vocab = values.filter(pa.array(counts >= min_count)).drop_null()
    if pa.types.is_string(vocab.type):
      vocab = vocab.filter(pc.not_equal(vocab, ''))
      return np.asarray(vocab.take(pc.sort_indices(vocab)).to_pylist(), dtype=str)
    return np.sort(vocab.to_numpy(zero_copy_only=False)).astype(np.int64)


class Moments:
  """Count, mean, M2 (sum of squared deviations), min and max of each dense column."""

  def __init__(self, d: int):
    self.n, self.mean, self.m2 = 0, np.zeros(d), np.zeros(d)
    self.min, self.max = np.full(d, np.inf), np.full(d, -np.inf)

  def add(self, x: np.ndarray) -> None:  # (N, D) float64
    if len(x) == 0 or x.shape[1] == 0:
      self.n += len(x)
      return
    n, mean = len(x), x.mean(axis=0)
    m2 = ((x - mean) ** 2).sum(axis=0)
    total = self.n + n
    delta = mean - self.mean
    self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
    self.mean = self.mean + delta * n / total
    self.n = total
    self.min, self.max = np.minimum(self.min, x.min(axis=0)), np.maximum(self.max, x.max(axis=0))

  def scaling(self, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) with scaled = (x - shift) / scale."""
    d = len(self.mean)
    if how == 'none' or d == 0:
      return np.zeros(d), np.ones(d)
    if how == 'standard':
      shift, scale = self.mean, np.sqrt(self.m2 / max(self.n, 1))
    elif how == 'minmax':
      shift, scale = self.min, self.max - self.min
    else:
      raise ConfigError(f"unknown config.data.dense_scaling {how!r}; choose 'standard', 'minmax' "
                        "or 'none'")
    return shift, np.where(scale > 1e-12, scale, 1.0)


class ScenarioSeen:
  """Rows per raw scenario value and where each value was first seen, per split."""

  def __init__(self):
    self.rows: dict[str, dict[str, int]] = {}
    self.first: dict[str, dict[str, str]] = {}

  def add(self, split: str, values, source: str, lines: np.ndarray) -> None:
    vc = pc.value_counts(encode._as_arrow(values, pa.string()))
    rows, first = self.rows.setdefault(split, {}), self.first.setdefault(split, {})
    for v, c in zip(vc.field('values').to_pylist(), vc.field('counts').to_pylist()):
      if v not in first:
        i = int(np.argmax(np.asarray(pc.equal(encode._as_arrow(values, pa.string()), v))))
        first[v] = f'{source}, line {int(lines[i])}'
      rows[v] = rows.get(v, 0) + c


def _sorted_values(values) -> list[str]:
  values = list(values)
  try:
    return sorted(values, key=int)
  except ValueError:
    return sorted(values)


def scenario_values(seen: ScenarioSeen, field: str, configured: Sequence,
                    splits: Sequence[str]) -> list[str]:
  """The scenario values in id order; a value at validation/test time that is not among them is
  an error, a configured value never seen in training a warning."""
  train = seen.rows.get('train', {})
  if configured:
    values = [str(v) for v in configured]
    if len(set(values)) != len(values):
      raise ConfigError(f'config.data.scenario_values has duplicates: {values}')
    source = f'config.data.scenario_values {values}'
  else:
    values = _sorted_values(train)
    source = f'the training split (values {values})'
  for split in splits:
    for v, where in seen.first.get(split, {}).items():
      if v not in values:
        raise DataError(f'{split} split: scenario value {v!r} of field {field!r} ({where}) '
                        f'does not occur in {source}')
  for v in values:
    if v not in train:
      others = [f'{s} {seen.rows[s][v]:,} rows' for s in splits if seen.rows.get(s, {}).get(v)]
      log.warning('scenario %s=%r (config.data.scenario_values) never occurs in the training '
                  'split%s: its scenario-specific parameters stay untrained', field, v,
                  f' but in {", ".join(others)}' if others else '')
  return values


def fit_encoder(schema, cfg, counts: Mapping[str, IdCounts], moments: Moments,
                scenarios: Sequence[str]) -> encode.Encoder:
  shift, scale = moments.scaling(str(cfg.get('dense_scaling', 'standard')))
  min_count = int(cfg.min_count)
  return encode.Encoder(
      scenario_field=schema.scenario, scenario_values=tuple(scenarios), label_column=schema.label,
      cat_names=schema.cat, ids_numeric=schema.ids_numeric, multi=schema.multi,
      dense_names=schema.dense, dense_shift=shift, dense_scale=scale,
      dense_scaling=str(cfg.get('dense_scaling', 'standard')),
      vocabs={name: c.vocabulary(min_count) for name, c in counts.items()})

"""Where the rows come from: the user's files, read as chunks of raw columns tagged with their split.

A dataset module turns `config.data` into a `Source`: the files it reads (checked against the ones
a prepared dataset was made from) and `chunks()`, an iterator over `Chunk`s that gives the same
rows in the same order each time it is called (preparation reads it once and spills it for the
second pass; the TFDS builders read it too).

Splits that need all rows at once stay bounded: a time split first reads only the time column
(8 bytes a row, plus 8 for its sort order, then 1 byte a row of split assignment), a seeded random
split counts the rows first (its permutation: 8 bytes a row while computing).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import math
import os
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from midpg_jax.data import reader
from midpg_jax.errors import ConfigError, DataError

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass
class Chunk:
  """Raw columns of consecutive rows of one file (after the dataset's filters and derivations)."""

  columns: dict  # name -> pa.Array | np.ndarray, all (n,)
  source: str  # the file
  lines: np.ndarray  # (n,) int64: 1-based line of each row in `source`
  split: str | np.ndarray  # one split for every row, or (n,) int8 index into SPLITS

  def __len__(self) -> int:
    return len(self.lines)

  def take(self, mask: np.ndarray) -> 'Chunk':
    index = pa.array(np.flatnonzero(mask))
    cols = {k: (v[mask] if isinstance(v, np.ndarray) else v.take(index))
            for k, v in self.columns.items()}
    split = self.split if isinstance(self.split, str) else self.split[mask]
    return Chunk(cols, self.source, self.lines[mask], split)

  def by_split(self) -> Iterator[tuple[str, 'Chunk']]:
    if isinstance(self.split, str):
      yield self.split, self
      return
    if len(self) and (self.split == self.split[0]).all():  # most chunks: one split, no copy
      yield SPLITS[int(self.split[0])], self
      return
    for i, name in enumerate(SPLITS):
      mask = self.split == i
      if mask.any():
        yield name, self.take(mask)


@dataclasses.dataclass
class Source:
  files: Sequence[str]
  chunks: Callable[[], Iterator[Chunk]]


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


def find_files(directory: str, pattern: str, what: str, instructions: str = '',
               exclude: Sequence[str] = ()) -> list[str]:
  """Sorted paths matching the glob `pattern` in `directory`, less those matching a pattern in
  `exclude` (unless `pattern` itself asks for them); an error naming both when none match."""
  exclude = [e for e in exclude if not fnmatch.fnmatch(pattern, e)]
  paths = sorted(p for p in glob.glob(os.path.join(directory, pattern)) if os.path.isfile(p)
                 and not any(fnmatch.fnmatch(os.path.basename(p), e) for e in exclude))
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
# Reading files as chunks.


def read_chunks(path: str, kinds: Mapping[str, str], split, *, delimiter: str = ',',
                column_names: Sequence[str] | None = None, json_lines: bool = False,
                keep: Callable[[dict], np.ndarray] | None = None, progress: bool = False,
                block_size: int | None = None) -> Iterator[Chunk]:
  """Chunks of file `path` (CSV, or JSON lines), every row of split `split` (a name, or a callable
  (first row index in the file, n) -> (n,) int8 split indices). `keep(columns) -> bool mask`
  drops rows after they were checked."""
  if json_lines:
    it = reader.iter_json_lines(path, kinds, progress=progress, block_size=block_size)
  else:
    it = reader.iter_csv(path, kinds, delimiter=delimiter, column_names=column_names,
                         progress=progress, block_size=block_size)
  first_data_line = 1 if (json_lines or column_names) else 2
  for columns, first_line in it:
    n = len(next(iter(columns.values())))
    rows = split if isinstance(split, str) else split(first_line - first_data_line, n)
    yield chunk_of(columns, path, first_line, rows, keep)


def chunk_of(columns: Mapping, path: str, first_line: int, split,
             keep: Callable[[Mapping], np.ndarray] | None = None) -> Chunk:
  """The Chunk of consecutive rows starting at `first_line` of `path`, rows `keep` only."""
  n = len(next(iter(columns.values())))
  chunk = Chunk(dict(columns), path, np.arange(first_line, first_line + n, dtype=np.int64), split)
  return chunk if keep is None else chunk.take(np.asarray(keep(columns), bool))


def constant_column(value: str, n: int) -> pa.Array:
  """A string column holding `value` n times (e.g. the country of an AliExpress file)."""
  return pa.repeat(pa.scalar(value, pa.string()), n)


# ------------------------------------------------------------------------------------------------
# Splits that need every row: computed once from a first pass, then looked up per chunk.


def _check_fractions(fractions) -> np.ndarray:
  fractions = np.asarray(fractions, np.float64)
  if len(fractions) != 3 or (fractions < 0).any() or not math.isclose(fractions.sum(), 1.0):
    raise ConfigError(f'split_fractions must be three fractions (train, validation, test) '
                      f'summing to 1, got {tuple(fractions)}')
  return fractions


def _assign(order: np.ndarray, fractions) -> np.ndarray:
  """(n,) int8 split of each row: rows order[:k0] train, then validation, then test."""
  bounds = np.round(np.cumsum(np.concatenate([[0], _check_fractions(fractions)])) *
                    len(order)).astype(np.int64)
  split = np.empty(len(order), np.int8)
  for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
    split[order[lo:hi]] = i
  return split


def random_assignment(n: int, fractions: Sequence[float], seed: int) -> np.ndarray:
  """(n,) int8 split per row, a deterministic function of (n, fractions, seed)."""
  return _assign(np.random.default_rng([int(seed), 7]).permutation(n), fractions)


def time_assignment(times: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
  """(n,) int8 split per row: the earliest `fractions[0]` of rows train, then validation, test
  (ties at a boundary go by row order)."""
  return _assign(np.argsort(times, kind='stable'), fractions)


class RowSplits:
  """The split of every row of a sequence of files, computed once on first use by `compute()`
  -> (n_total,) int8; `for_file(i)` is the `split` callable of file i for `read_chunks`."""

  def __init__(self, compute: Callable[[], np.ndarray], rows_per_file: Callable[[], list[int]]):
    self._compute, self._rows_per_file = compute, rows_per_file
    self._split = self._offsets = None

  def _ensure(self):
    if self._split is None:
      self._split = self._compute()
      self._offsets = np.cumsum([0] + list(self._rows_per_file()))

  def for_file(self, i: int) -> Callable[[int, int], np.ndarray]:
    def split(first_row: int, n: int) -> np.ndarray:
      self._ensure()
      lo = self._offsets[i] + first_row
      return self._split[lo:lo + n]
    return split


def column_of_files(paths: Sequence[str], name: str, kind: str, read=None) -> tuple[np.ndarray,
                                                                                    list[int]]:
  """One column of every row of `paths` concatenated, and the rows per file (a first pass)."""
  parts, rows = [], []
  for p in paths:
    it = read(p, {name: kind}) if read else reader.iter_csv(p, {name: kind})
    got = [np.asarray(cols[name].to_numpy(zero_copy_only=False)) for cols, _ in it]
    parts.extend(got)
    rows.append(sum(len(g) for g in got))
  return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), rows


def collect_splits(source: Source) -> dict[str, list[Chunk]]:
  """The chunks of each split (every row in memory: for small data, tests and the TFDS builders)."""
  out = {s: [] for s in SPLITS}
  for chunk in source.chunks():
    for split, part in chunk.by_split():
      out[split].append(part)
  return out


def column(chunks: Sequence[Chunk], name: str) -> np.ndarray:
  """Column `name` of `chunks` concatenated, as numpy."""
  parts = [np.asarray(c.columns[name] if isinstance(c.columns[name], np.ndarray)
                      else c.columns[name].to_numpy(zero_copy_only=False)) for c in chunks]
  return np.concatenate(parts) if parts else np.zeros(0)

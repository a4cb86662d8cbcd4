"""Columnar numpy input pipeline: shuffled fixed-size training batches, padded evaluation batches.

Batches are plain dicts of numpy arrays with the same keys as the columns (see `schema.py`), plus
`weight` (B,) float32: 1 for a real example and 0 for padding. Training batches never need padding
(the last partial batch of an epoch is dropped, as the peers do); evaluation batches pad the last
one so every example is seen exactly once and padding carries weight 0.

The shuffle order is a pure function of (seed, epoch), so training can resume mid-epoch by
skipping batches, and every host can compute the same order and take its own slice
(`process_index` / `process_count`) without talking to the others. It is computed a window at a
time (`EpochOrder`), so a split of any size is shuffled without a permutation of all its rows.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from midpg_jax.data.schema import Columns, num_rows
from midpg_jax.errors import ConfigError


def take_rows(columns: Mapping, index) -> Columns:
  """Rows `index` of every column (recursing into the `multi` dict)."""
  out = {}
  for key, arr in columns.items():
    out[key] = take_rows(arr, index) if isinstance(arr, Mapping) else arr[index]
  return out


# The shuffle: rows are cut into blocks of SHUFFLE_BLOCK_ROWS consecutive rows; an epoch visits the
# blocks in a random order, SHUFFLE_WINDOW_ROWS rows (1024 random blocks) at a time, and shuffles the
# rows within each window. A dataset of at most one window (1M rows) is shuffled uniformly; a larger
# one never needs more than one window of indices (8 MB) at once, not a permutation of every row,
# and each batch reads from 1024 blocks of the memory-mapped files, not from all of them.
SHUFFLE_BLOCK_ROWS = 1024
SHUFFLE_WINDOW_ROWS = 1 << 20


class EpochOrder:
  """The shuffled order of the rows of one epoch, a pure function of (n, seed, epoch), computed one
  window at a time: `rows(lo, hi)` is positions lo..hi of the order."""

  def __init__(self, n: int, seed: int, epoch: int, block_rows: int = SHUFFLE_BLOCK_ROWS,
               window_rows: int = SHUFFLE_WINDOW_ROWS):
    self.n, self.seed, self.epoch, self.block_rows = n, seed, epoch, block_rows
    num_blocks = max(1, -(-n // block_rows))
    self.blocks = np.random.default_rng([seed, epoch]).permutation(num_blocks)
    self.per_window = max(1, window_rows // block_rows)
    sizes = np.full(num_blocks, block_rows, np.int64)
    sizes[-1] = n - (num_blocks - 1) * block_rows
    window_sizes = np.add.reduceat(sizes[self.blocks], np.arange(0, num_blocks, self.per_window))
    self.starts = np.concatenate([[0], np.cumsum(window_sizes)])  # (windows + 1,)
    self._cached = (-1, None)

  def _window(self, w: int) -> np.ndarray:
    if self._cached[0] != w:
      blocks = self.blocks[w * self.per_window:(w + 1) * self.per_window]
      rows = np.concatenate([np.arange(b * self.block_rows, min(self.n, (b + 1) * self.block_rows))
                             for b in blocks])
      self._cached = (w, rows[np.random.default_rng([self.seed, self.epoch, w])
                              .permutation(len(rows))])
    return self._cached[1]

  def rows(self, lo: int, hi: int) -> np.ndarray:
    parts = []
    while lo < hi:
      w = int(np.searchsorted(self.starts, lo, side='right')) - 1
      end = min(hi, int(self.starts[w + 1]))
      parts.append(self._window(w)[lo - self.starts[w]:end - self.starts[w]])
      lo = end
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def steps_per_epoch(n: int, global_batch_size: int) -> int:
  return n // global_batch_size


def train_batches(columns: Mapping, global_batch_size: int, seed: int, epoch: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[Columns]:
  """Yields this process's share of each global training batch of one epoch.

  Args:
    columns: the full split (every host holds, or memory-maps, the same columns; each reads only
      the rows of its share).
    global_batch_size: examples per step over all processes; must divide by process_count.
    start_step: skip this many batches (resuming inside an epoch).
  """
  if global_batch_size % process_count:
    raise ConfigError(f'global batch size {global_batch_size} does not divide by '
                     f'{process_count} processes')
  n = num_rows(columns)
  per_process = global_batch_size // process_count
  order = EpochOrder(n, seed, epoch)
  for step in range(start_step, steps_per_epoch(n, global_batch_size)):
    lo = step * global_batch_size + process_index * per_process
    # Sorting the indices within a batch keeps memory access (and memmap page faults) local
    # without changing which examples form the batch.
    idx = np.sort(order.rows(lo, lo + per_process))
    batch = take_rows(columns, idx)
    batch['weight'] = np.ones(per_process, np.float32)
    yield batch


def eval_batches(columns: Mapping, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Columns]:
  """Yields padded batches covering this process's contiguous share of the split exactly once.

  All processes yield the same number of batches (collectives need that); a process whose share
  runs out yields all-padding batches.
  """
  n = num_rows(columns)
  share = -(-n // process_count)
  lo, hi = min(n, process_index * share), min(n, (process_index + 1) * share)
  num_batches = max(1, -(-share // batch_size))
  for b in range(num_batches):
    start = lo + b * batch_size
    stop = min(hi, start + batch_size)
    real = max(0, stop - start)
    idx = np.arange(start, start + batch_size)
    idx = np.where(np.arange(batch_size) < real, idx, 0 if n else 0)  # pad with row 0
    batch = take_rows(columns, idx)
    batch['weight'] = (np.arange(batch_size) < real).astype(np.float32)
    yield batch


def num_eval_batches(n: int, batch_size: int, process_count: int = 1) -> int:
  share = -(-n // process_count)
  return max(1, -(-share // batch_size))

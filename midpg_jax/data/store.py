"""A prepared dataset on disk: its folder, its fingerprint, the column writer and memory-mapped loading.

  meta.json              what it was made from (config, source files with size and mtime), split
                         summaries; written last, so its presence marks a complete folder
  encoder.json, vocab/   the Encoder (encode.py)
  feature_spec.json, scenarios.json
  <split>/{cat,dense,scenario,label}.npy, <split>/multi/<field>.npy

Sources are compared by (absolute path, size, modification time), not by a content hash: a stat
costs microseconds, hashing a 1 GB file costs seconds on every run (measured: docs/data.md, "Real
datasets"), and a changed file almost always changes its size or mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping, Sequence

import numpy as np

from midpg_jax import files
from midpg_jax.data.schema import Columns, FeatureSpec, load_spec

FORMAT_VERSION = 2
SPLITS = ('train', 'validation', 'test')
# Config keys that say where things are or how to show progress, not what the data is.
NOT_FINGERPRINTED = ('manual_dir', 'prepared_dir', 'progress', 'rebuild')


def prepared_path(cfg) -> str:
  return os.path.expanduser(str(cfg.get('prepared_dir', '') or
                                os.path.join('data_cache', str(cfg.name))))


def fingerprinted_config(cfg) -> dict:
  d = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
  return {k: v for k, v in d.items() if k not in NOT_FINGERPRINTED}


def fingerprint(cfg) -> str:
  text = json.dumps({'format_version': FORMAT_VERSION, 'config': fingerprinted_config(cfg)},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def source_stats(paths: Sequence[str]) -> list[dict]:
  out = []
  for p in sorted(paths):
    st = os.stat(p)
    out.append({'path': os.path.abspath(p), 'bytes': st.st_size, 'mtime_ns': st.st_mtime_ns})
  return out


def sources_changed(recorded: Sequence[Mapping], now: Sequence[Mapping]) -> list[str]:
  """What differs between the source files a dataset was prepared from and today's ([] = none)."""
  old = {s['path']: s for s in recorded}
  new = {s['path']: s for s in now}
  why = [f'{p} is new' for p in sorted(set(new) - set(old))]
  why += [f'{p} is no longer read' for p in sorted(set(old) - set(new))]
  for p in sorted(set(old) & set(new)):
    if old[p].get('bytes') != new[p]['bytes']:
      why.append(f'{p} changed size ({old[p].get("bytes")} -> {new[p]["bytes"]} bytes)')
    elif old[p].get('mtime_ns') != new[p]['mtime_ns']:
      why.append(f'{p} was modified')
  return why


def read_meta(directory: str) -> dict | None:
  try:
    with open(os.path.join(directory, 'meta.json')) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


class _NpyFile:
  """An `.npy` file of known shape, created empty and filled row block by row block with plain
  writes: writing through a memory map would count every written page in the process's resident
  memory until the kernel writes it back (2.5 GB at 20M Ali-CCP rows)."""

  def __init__(self, path: str, dtype, shape: tuple[int, ...]):
    np.lib.format.open_memmap(path, 'w+', dtype, shape).flush()  # header + file of full size
    with open(path, 'rb') as f:
      version = np.lib.format.read_magic(f)
      (np.lib.format.read_array_header_1_0 if version == (1, 0)
       else np.lib.format.read_array_header_2_0)(f)
      self.offset = f.tell()
    self.file = open(path, 'r+b')
    self.dtype, self.row_bytes = np.dtype(dtype), int(np.prod(shape[1:], dtype=np.int64)) * \
        np.dtype(dtype).itemsize

  def write(self, lo: int, rows: np.ndarray) -> None:
    self.file.seek(self.offset + lo * self.row_bytes)
    self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())

  def close(self) -> None:
    self.file.close()


class ColumnWriter:
  """Writes each split's columns, chunk by chunk, into `.npy` files of the row counts known from
  the first pass (read back memory-mapped); keeps the per-scenario row and positive counts."""

  def __init__(self, directory: str, spec: FeatureSpec, rows: Mapping[str, int]):
    self.spec, self.rows, self.filled = spec, dict(rows), {s: 0 for s in rows}
    self.files = {}
    self.counts = {s: np.zeros((2, spec.num_scenarios)) for s in rows}
    shapes = {'cat': (len(spec.cat_names),), 'dense': (spec.num_dense,), 'scenario': (),
              'label': ()}
    dtypes = {'cat': np.int32, 'dense': np.float32, 'scenario': np.int32, 'label': np.float32}
    for split, n in rows.items():
      os.makedirs(os.path.join(directory, split, 'multi'), exist_ok=True)
      files = {k: _NpyFile(os.path.join(directory, split, f'{k}.npy'), dtypes[k], (n, *shapes[k]))
               for k in shapes}
      for name, max_len in zip(spec.multi_names, spec.multi_max_lens):
        files[f'multi/{name}'] = _NpyFile(os.path.join(directory, split, 'multi', f'{name}.npy'),
                                          np.int32, (n, max_len))
      self.files[split] = files

  def write(self, split: str, cols: Columns) -> None:
    lo = self.filled[split]
    n = len(cols['label'])
    if lo + n > self.rows[split]:
      raise RuntimeError(f'{split}: more rows than counted in the first pass')
    files = self.files[split]
    for k, v in cols.items():
      if k == 'multi':
        for name, m in v.items():
          files[f'multi/{name}'].write(lo, m)
      else:
        files[k].write(lo, v)
    self.counts[split] += [np.bincount(cols['scenario'], minlength=self.spec.num_scenarios),
                           np.bincount(cols['scenario'], weights=cols['label'],
                                       minlength=self.spec.num_scenarios)]
    self.filled[split] = lo + n

  def close(self) -> dict:
    """Flushes the files; returns the split summaries for meta.json."""
    summary = {}
    for split, split_files in self.files.items():
      for f in split_files.values():
        f.close()
      rows, pos = self.counts[split]
      summary[split] = {
          'rows': int(rows.sum()), 'positives': int(pos.sum()),
          'per_scenario': {n: {'rows': int(r), 'positives': int(p)}
                           for n, r, p in zip(self.spec.scenario_names, rows, pos)}}
    self.files = {}
    return summary


def _load_npy(path: str) -> np.ndarray:
  arr = np.load(path, mmap_mode='r')
  return np.load(path) if arr.size == 0 else arr  # an empty array cannot be memory-mapped


def load_prepared(directory: str) -> tuple[FeatureSpec, dict[str, Columns]]:
  """The FeatureSpec and the splits of a prepared folder, every column memory-mapped."""
  spec = load_spec(os.path.join(directory, 'feature_spec.json'))
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


def move_into_place(tmp: str, target: str, fp: str) -> None:
  """Renames the complete folder `tmp` (of `files.staging_dir(target)`) to `target`, replacing an
  older one only at that moment."""
  try:
    files.replace_dir(tmp, target)
  except OSError:
    meta = read_meta(target)  # another process finished the same dataset first
    if meta is None or meta.get('fingerprint') != fp:
      raise

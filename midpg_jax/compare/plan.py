"""What the comparison trains: each run's config, its fingerprint, and the store of finished runs.

A run is identified by the fingerprint of its complete training config (model, data, optimizer,
seed), never by its (model, seed) name: a finished run is reused wherever the same config comes
up again (the grid point chosen on validation is seed `grid_seed` of the final runs; the
heterogeneity sweep at the main runs' heterogeneity is the main runs), and a run whose config
changed since (another learning rate in the base config, another dataset size) is trained anew in
its own folder instead of being read back from an older one.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os

import ml_collections

from midpg_jax.data import load_dataset, register_dataset
from midpg_jax.data.pipeline import take_rows
from midpg_jax.data.schema import num_rows
from midpg_jax.errors import ConfigError
from midpg_jax.run_config import moved_key_message

# Keys that change what a run prints, not what it computes: left out of the fingerprint.
_VOLATILE = ('train.progress_bar', 'train.log_every_steps', 'train.prefetch')
FIRST_ROWS = 'first_rows'


@register_dataset(FIRST_ROWS)
def _first_rows(cfg):
  """The first `num_rows` training rows of the dataset `cfg.source` (validation and test whole).

  On a prepared dataset the training columns are memory-mapped, so the slice is a view: a learning
  curve over row counts reads only the rows it trains on.
  """
  dataset = load_dataset(cfg.source)
  available = num_rows(dataset.splits['train'])
  n = int(cfg.num_rows)
  if not 0 < n <= available:
    raise ConfigError(f'learning curve: {n:,} training rows asked of a training split of '
                      f'{available:,} rows ({cfg.source.name})')
  splits = dict(dataset.splits, train=take_rows(dataset.splits['train'], slice(0, n)))
  return dataset.spec, splits


def data_name(data_cfg) -> str:
  """The underlying dataset's name (through the `first_rows` wrapper)."""
  return data_name(data_cfg.source) if data_cfg.name == FIRST_ROWS else data_cfg.name


def set_key(cfg: ml_collections.ConfigDict, key: str, value, where: str) -> None:
  node = cfg
  *path, leaf = key.split('.')
  for part in path:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise ConfigError(f'{where}: unknown config key {key!r}')
    node = node[part]
  if leaf not in node:
    raise ConfigError(f'{where}: {moved_key_message(key) or f"unknown config key {key!r}"}')
  node[leaf] = value


def variant_config(cmp_cfg, name: str, overrides: dict, seed: int, *, learning_rate=None,
                   weight_decay=None, heterogeneity=None, train_rows=None, source_rows=None
                   ) -> ml_collections.ConfigDict:
  """The training config of one run: the comparison's base config with the variant's overrides,
  then the tuned optimizer setting, the sweep's heterogeneity or the curve's row count (the first
  `train_rows` of a built-in dataset generated with `source_rows` training rows, the curve's
  largest size, so every size has the same validation and test rows)."""
  cfg = cmp_cfg.base.copy_and_resolve_references()
  cfg.unlock()
  cfg.seed = int(seed)
  for key, value in overrides.items():
    set_key(cfg, key, value, f'compare variant {name!r}')
  if learning_rate is not None:
    cfg.train.learning_rate = float(learning_rate)
  if weight_decay is not None:
    cfg.train.weight_decay = float(weight_decay)
  if heterogeneity is not None:
    cfg.data.heterogeneity = float(heterogeneity)
  if train_rows is not None:
    source = cfg.data
    if source.name == 'synthetic':  # generate enough rows; the curve takes the first ones
      source.num_train = max(int(source.num_train), int(source_rows or 0), int(train_rows))
    cfg.data = ml_collections.ConfigDict({'name': FIRST_ROWS, 'num_rows': int(train_rows),
                                          'source': source})
  cfg.train.progress_bar = False
  return cfg


def variants(cmp_cfg) -> list[tuple[str, dict]]:
  """(name, overrides) of every compared model or MI-DPG variant, in table order."""
  out = [(m, {'model.name': m}) for m in cmp_cfg.models]
  for name, overrides in cmp_cfg.get('variants', {}).items():
    out.append((name, dict(overrides)))
  names = [n for n, _ in out]
  if len(set(names)) != len(names):
    raise ConfigError(f'compare: a model or variant is listed twice in {names}')
  return out


def fingerprint(cfg: ml_collections.ConfigDict) -> str:
  """12 hex digits of the SHA-256 of the run's config (volatile display keys and the config
  blocks of the other models, which the run never reads, left out)."""
  plain = cfg.to_dict()
  model = plain['model']
  for key in [k for k, v in model.items() if isinstance(v, dict) and k != model['name']]:
    del model[key]
  for key in _VOLATILE:
    *path, leaf = key.split('.')
    node = plain
    for part in path:
      node = node.get(part, {})
    node.pop(leaf, None)
  text = json.dumps(plain, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


class RunStore:
  """`runs.csv`: one row per finished run, keyed by its config's fingerprint; written whole after
  every run (via a temporary file), so an interrupted comparison resumes from it.

  Several comparisons may share one store (e.g. two processes, each training half of the models
  on a 2-core machine whose steps do not keep both cores busy): every write re-reads the file
  under an exclusive lock and adds its row to what is there, so no process drops another's rows.
  """

  def __init__(self, path: str):
    self.path = path
    self.rows: dict[str, dict] = self._read()

  def _read(self) -> dict[str, dict]:
    if not os.path.exists(self.path):
      return {}
    with open(self.path) as f:
      return {r['fingerprint']: r for r in csv.DictReader(f)}

  def get(self, fp: str) -> dict | None:
    return self.rows.get(fp)

  def add(self, row: dict) -> None:
    with open(self.path + '.lock', 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
      self.rows = {**self._read(), **self.rows}
      self.rows[row['fingerprint']] = {k: str(v) for k, v in row.items()}
      fields = list(dict.fromkeys(k for r in self.rows.values() for k in r))
      tmp = f'{self.path}.{os.getpid()}.tmp'
      with open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval='')
        writer.writeheader()
        writer.writerows(self.rows.values())
      os.replace(tmp, self.path)

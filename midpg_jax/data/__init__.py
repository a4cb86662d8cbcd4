"""Datasets: one registry from `config.data.name` to a loader returning (FeatureSpec, splits)."""

from __future__ import annotations

import dataclasses
from typing import Callable

from midpg_jax.data import aliccp, aliexpress, amazon, iaac, scenario_wise_rec, synthetic
from midpg_jax.data.schema import Columns, FeatureSpec, num_rows, validate_columns
from midpg_jax.errors import ConfigError


@dataclasses.dataclass
class Dataset:
  spec: FeatureSpec
  splits: dict[str, Columns]  # 'train', 'validation', 'test'

  @property
  def has_oracle(self) -> bool:
    return 'prob' in self.splits['train']


# Real datasets are prepared once from the user's downloads into memory-mapped columns
# (midpg_jax/data/prepare.py); their TFDS builders are in tfds_builders.py (imported on demand).
_LOADERS: dict[str, Callable] = {
    'synthetic': synthetic.generate, 'iaac': iaac.load, 'aliccp': aliccp.load,
    'aliexpress': aliexpress.load, 'amazon': amazon.load, 'mind': scenario_wise_rec.load,
    'douban': scenario_wise_rec.load}


def register_dataset(name: str):
  """Decorator: `@register_dataset('aliccp') def load(cfg) -> (spec, splits)`."""
  def wrap(fn):
    _LOADERS[name] = fn
    return fn
  return wrap


def dataset_names() -> list[str]:
  return sorted(_LOADERS)


def load_dataset(data_config) -> Dataset:
  name = data_config.name
  if name not in _LOADERS:
    raise ConfigError(f'unknown dataset config.data.name={name!r}; known: {dataset_names()}')
  spec, splits = _LOADERS[name](data_config)
  for split, cols in splits.items():
    validate_columns(cols, spec, f'dataset {name!r} split {split!r}')
  return Dataset(spec, splits)


__all__ = ['Dataset', 'FeatureSpec', 'Columns', 'load_dataset', 'register_dataset',
           'dataset_names', 'num_rows']

"""The model registry's machinery: `register_model`, the per-model config blocks, `build_model`.

Each model registers in its own module, beside its class (importing midpg_jax.models imports them
all), with the default block of its own hyper-parameters `config.model.<name>.*`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import ml_collections

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.errors import ConfigError, DataError
from midpg_jax.models.precision import with_precision


class Block:
  """A model's config block as its builder reads it: values by attribute, checks that name the
  key as `model.<name>.<key>` in their one-line errors, and the keys read (`read`, for tests)."""

  def __init__(self, name: str, values: dict[str, Any]):
    self.name, self._values, self.read = name, dict(values), set()

  def __getattr__(self, key: str) -> Any:
    if key.startswith('_'):
      raise AttributeError(key)
    if key not in self._values:  # a builder reading a key its block lacks: our bug
      raise AttributeError(f'{self.path(key)} is not in the default block of {self.name!r}')
    self.read.add(key)
    return self._values[key]

  def path(self, key: str) -> str:
    return f'model.{self.name}.{key}'

  def int_at_least(self, key: str, low: int) -> int:
    value = int(getattr(self, key))
    if value < low:
      raise ConfigError(f'{self.path(key)} must be ' +
                        ('a positive integer' if low == 1 else f'>= {low}') + f', got {value}')
    return value

  def widths(self, key: str) -> tuple[int, ...]:
    widths = tuple(int(w) for w in getattr(self, key))
    if not widths or min(widths) <= 0:
      raise ConfigError(f'{self.path(key)} must be positive widths, got {widths}')
    return widths

  def choice(self, key: str, choices) -> str:
    value = getattr(self, key)
    if value not in choices:
      raise ConfigError(f'unknown {self.path(key)} {value!r}; choose one of {tuple(choices)}')
    return value

  def fields(self, key: str, spec: FeatureSpec) -> tuple[str, ...]:
    """Names of categorical or multi-valued fields of `spec`."""
    names = tuple(getattr(self, key))
    known = (*spec.cat_names, *spec.multi_names)
    unknown = set(names) - set(known)
    if unknown:
      raise ConfigError(f'{self.path(key)} names unknown fields {sorted(unknown)}; known: '
                        f'{sorted(known)}')
    return names


@dataclasses.dataclass(frozen=True)
class Registered:
  builder: Callable  # (model_config, block: Block | None, spec, base_rate) -> nn.Module
  defaults: dict[str, Any]  # the block `config.model.<name>`; {} = no block


_MODELS: dict[str, Registered] = {}


def register_model(name: str, **defaults):
  """Registers a builder `fn(model_config, block, spec, base_rate) -> nn.Module` whose own
  hyper-parameters are the block `config.model.<name>` with these `defaults` (none: no block,
  `block` is None). base_rate: None or the mean training label."""
  def wrap(fn):
    _MODELS[name] = Registered(fn, dict(defaults))
    return fn
  return wrap


def model_names() -> list[str]:
  return sorted(_MODELS)


def default_blocks() -> dict[str, ml_collections.ConfigDict]:
  """{model name: its default block} for every model that has one (midpg_jax/config.py)."""
  return {name: ml_collections.ConfigDict(r.defaults) for name, r in sorted(_MODELS.items())
          if r.defaults}


def registered(name: str) -> Registered:
  if name not in _MODELS:
    raise ConfigError(f'unknown config.model.name={name!r}; known: {model_names()}')
  return _MODELS[name]


def mi_weight(model_config) -> float:
  """λ of the MI term of the loss: the `mi_weight` of the model's block (MI-DPG's), 0 for a model
  without one."""
  block = model_config.get(model_config.name)
  return float(block.get('mi_weight', 0.0)) if block is not None else 0.0


def _block(model_config, name: str, defaults: dict) -> Block | None:
  """The model's block, checked to hold exactly its default keys (a config file or a saved run
  may carry any dict; the command line's overrides are checked by the locked ConfigDict)."""
  if not defaults:
    return None
  given = model_config.get(name)
  if given is None:
    raise ConfigError(f'config.model has no block model.{name} (keys {sorted(defaults)}); '
                      'start from midpg_jax.config.get_config(), which has every block')
  values = dict(given.items())
  unknown, missing = sorted(set(values) - set(defaults)), sorted(set(defaults) - set(values))
  if unknown:
    raise ConfigError(f'no config key model.{name}.{unknown[0]}; model.{name} has '
                      f'{sorted(defaults)}')
  if missing:
    raise ConfigError(f'model.{name} lacks {missing}; start from '
                      'midpg_jax.config.get_config()')
  return Block(name, values)


def build_model(model_config, spec: FeatureSpec, base_rate: float | None = None) -> nn.Module:
  """base_rate: mean training label (the trainer passes it); a builder may use it to initialise
  (`logistic`'s output bias) and must work without it."""
  name = model_config.name
  model = registered(name)
  if base_rate is not None and not 0.0 < float(base_rate) < 1.0:
    raise DataError(f'the training labels have base rate {base_rate}; it must lie in (0, 1) '
                    '(a split with only one class cannot train a classifier)')
  module = model.builder(model_config, _block(model_config, name, model.defaults), spec,
                         None if base_rate is None else float(base_rate))
  return with_precision(module, model_config.get('dtype', 'float32'),
                        model_config.get('param_dtype', 'float32'))

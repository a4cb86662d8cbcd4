"""The one model registry: `build_model(config.model, spec)` for every model of the zoo.

Every model is a Linen module called as `model.apply(variables, batch, train=...)` and returns a
dict with `logits` (B,) and, when it has one, `mi_bound` (a scalar MI lower bound to maximise).
Sizes shared by all models (embedding dim, hidden widths, activation, dropout) come from the same
config keys, so models are compared at equal backbone size.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from midpg_jax import mi
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.baselines import Logistic, SharedBottom
from midpg_jax.models.midpg import COMBINES, MIDPG, SCENARIO_MATMULS

_BUILDERS: dict[str, Callable] = {}


def register_model(name: str):
  def wrap(fn):
    _BUILDERS[name] = fn
    return fn
  return wrap


def model_names() -> list[str]:
  return sorted(_BUILDERS)


def _common(cfg) -> dict:
  hidden = tuple(int(w) for w in cfg.hidden)
  if not hidden or min(hidden) <= 0:
    raise ValueError(f'model.hidden must be positive widths, got {tuple(cfg.hidden)}')
  if cfg.embed_dim <= 0:
    raise ValueError(f'model.embed_dim must be positive, got {cfg.embed_dim}')
  if not 0 <= cfg.dropout < 1:
    raise ValueError(f'model.dropout must lie in [0, 1), got {cfg.dropout}')
  return dict(hidden=hidden, embed_dim=int(cfg.embed_dim), act=cfg.activation,
              dropout=float(cfg.dropout))


@register_model('midpg')
def _midpg(cfg, spec):
  if cfg.rank <= 0 or cfg.specific_rank <= 0:
    raise ValueError(f'model.rank and model.specific_rank must be positive, got '
                     f'{cfg.rank} and {cfg.specific_rank}')
  if cfg.mi_estimator not in mi.ESTIMATORS:
    raise ValueError(f'unknown model.mi_estimator {cfg.mi_estimator!r}; '
                     f'choose one of {mi.ESTIMATORS}')
  if cfg.mi_temperature <= 0:
    raise ValueError(f'model.mi_temperature must be positive, got {cfg.mi_temperature}')
  if cfg.combine not in COMBINES:
    raise ValueError(f'unknown model.combine {cfg.combine!r}; choose one of {COMBINES}')
  if cfg.scenario_matmul not in SCENARIO_MATMULS:
    raise ValueError(f'unknown model.scenario_matmul {cfg.scenario_matmul!r}; '
                     f'choose one of {SCENARIO_MATMULS}')
  if cfg.combine == 'replace' and not (cfg.use_shared or cfg.use_specific):
    raise ValueError("model.combine='replace' needs model.use_shared or model.use_specific")
  unknown = set(cfg.generator_features) - set(spec.cat_names) - set(spec.multi_names)
  if unknown:
    raise ValueError(f'model.generator_features names unknown fields {sorted(unknown)}')
  return MIDPG(spec=spec, scenario_embed_dim=int(cfg.scenario_embed_dim), rank=int(cfg.rank),
               specific_rank=int(cfg.specific_rank),
               generator_hidden=tuple(int(w) for w in cfg.generator_hidden),
               generator_features=tuple(cfg.generator_features),
               use_shared=bool(cfg.use_shared), use_specific=bool(cfg.use_specific),
               combine=cfg.combine, scenario_matmul=cfg.scenario_matmul,
               mi_estimator=cfg.mi_estimator, mi_dim=int(cfg.mi_dim),
               mi_temperature=float(cfg.mi_temperature), **_common(cfg))


@register_model('shared_bottom')
def _shared_bottom(cfg, spec):
  return SharedBottom(spec=spec, **_common(cfg))


@register_model('logistic')
def _logistic(cfg, spec):
  return Logistic(spec=spec)


def build_model(model_config, spec: FeatureSpec) -> nn.Module:
  name = model_config.name
  if name not in _BUILDERS:
    raise ValueError(f'unknown config.model.name={name!r}; known: {model_names()}')
  return _BUILDERS[name](model_config, spec)


__all__ = ['build_model', 'register_model', 'model_names']

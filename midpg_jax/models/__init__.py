"""The one model registry: `build_model(config.model, spec, base_rate)` for every model of the zoo.

Every model is a Linen module called as `model.apply(variables, batch, train=...)` and returns a
dict with `logits` (B,) and, when it has one, `mi_bound` (a scalar MI lower bound to maximise)
and `diagnostics` (a dict of scalars the trainer logs as train/<name>).
Sizes shared by all models (embedding dim, hidden widths, activation, dropout) come from the same
config keys, so models are compared at equal backbone size.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from midpg_jax import mi
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.errors import ConfigError, DataError
from midpg_jax.models.baselines import Logistic, Mlp, SharedBottom
from midpg_jax.models.midpg import COMBINES, MIDPG
from midpg_jax.models.apg import APG, APG_CONDITIONS
from midpg_jax.models.gating import ADASPARSE_FORMS, AdaSparse, PEPNet
from midpg_jax.models.hamur import HAMUR
from midpg_jax.models.m2m import M2M
from midpg_jax.models.moe import HMoE, MMoE, PLE
from midpg_jax.models.precision import with_precision
from midpg_jax.models.sar_net import SARNet
from midpg_jax.models.scenario_ops import check_path
from midpg_jax.models.star import STAR

_BUILDERS: dict[str, Callable] = {}


def register_model(name: str):
  """Registers a builder `fn(model_config, spec, base_rate) -> nn.Module` (base_rate: None or
  the mean training label)."""
  def wrap(fn):
    _BUILDERS[name] = fn
    return fn
  return wrap


def model_names() -> list[str]:
  return sorted(_BUILDERS)


def _common(cfg) -> dict:
  try:
    hidden = tuple(int(w) for w in cfg.hidden)
  except (TypeError, ValueError):
    raise ConfigError(f'model.hidden must be a tuple of widths, got {cfg.hidden!r}') from None
  if not hidden or min(hidden) <= 0:
    raise ConfigError(f'model.hidden must be positive widths, got {tuple(cfg.hidden)}')
  if cfg.embed_dim <= 0:
    raise ConfigError(f'model.embed_dim must be positive, got {cfg.embed_dim}')
  if not 0 <= cfg.dropout < 1:
    raise ConfigError(f'model.dropout must lie in [0, 1), got {cfg.dropout}')
  return dict(hidden=hidden, embed_dim=int(cfg.embed_dim), act=cfg.activation,
              dropout=float(cfg.dropout))


@register_model('midpg')
def _midpg(cfg, spec, base_rate):
  if cfg.rank <= 0 or cfg.specific_rank <= 0:
    raise ConfigError(f'model.rank and model.specific_rank must be positive, got '
                     f'{cfg.rank} and {cfg.specific_rank}')
  if cfg.mi_estimator not in mi.ESTIMATORS:
    raise ConfigError(f'unknown model.mi_estimator {cfg.mi_estimator!r}; '
                     f'choose one of {mi.ESTIMATORS}')
  if cfg.mi_temperature <= 0:
    raise ConfigError(f'model.mi_temperature must be positive, got {cfg.mi_temperature}')
  if cfg.combine not in COMBINES:
    raise ConfigError(f'unknown model.combine {cfg.combine!r}; choose one of {COMBINES}')
  if cfg.combine == 'replace' and not (cfg.use_shared or cfg.use_specific):
    raise ConfigError("model.combine='replace' needs model.use_shared or model.use_specific")
  unknown = set(cfg.generator_features) - set(spec.cat_names) - set(spec.multi_names)
  if unknown:
    raise ConfigError(f'model.generator_features names unknown fields {sorted(unknown)}')
  return MIDPG(spec=spec, scenario_embed_dim=int(cfg.scenario_embed_dim), rank=int(cfg.rank),
               specific_rank=int(cfg.specific_rank),
               generator_hidden=tuple(int(w) for w in cfg.generator_hidden),
               generator_features=tuple(cfg.generator_features),
               use_shared=bool(cfg.use_shared), use_specific=bool(cfg.use_specific),
               combine=cfg.combine, scenario_matmul=_scenario_matmul(cfg),
               mi_estimator=cfg.mi_estimator, mi_dim=int(cfg.mi_dim),
               mi_temperature=float(cfg.mi_temperature), **_common(cfg))


@register_model('mlp')
def _mlp(cfg, spec, base_rate):
  return Mlp(spec=spec, **_common(cfg))


@register_model('shared_bottom')
def _shared_bottom(cfg, spec, base_rate):
  return SharedBottom(spec=spec, scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('logistic')
def _logistic(cfg, spec, base_rate):
  return Logistic(spec=spec, base_rate=base_rate)


# ---- The multi-scenario zoo: each model's paper and our choices are in its module docstring.

def _positive_ints(cfg, *keys) -> dict:
  for key in keys:
    if int(cfg[key]) <= 0:
      raise ConfigError(f'model.{key} must be a positive integer, got {cfg[key]}')
  return {key: int(cfg[key]) for key in keys}


def _widths(cfg, key) -> tuple[int, ...]:
  widths = tuple(int(w) for w in cfg[key])
  if not widths or min(widths) <= 0:
    raise ConfigError(f'model.{key} must be positive widths, got {tuple(cfg[key])}')
  return widths


def _scenario_matmul(cfg) -> str:
  """The one path choice of every model with per-scenario weights (MI-DPG and the zoo)."""
  return check_path(cfg.scenario_matmul)


def _pn_momentum(cfg) -> float:
  if not 0 <= cfg.pn_momentum < 1:
    raise ConfigError(f'model.pn_momentum must lie in [0, 1), got {cfg.pn_momentum}')
  return float(cfg.pn_momentum)


@register_model('mmoe')
def _mmoe(cfg, spec, base_rate):
  return MMoE(spec=spec, **_positive_ints(cfg, 'num_experts'),
              scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('ple')
def _ple(cfg, spec, base_rate):
  return PLE(spec=spec, **_positive_ints(cfg, 'num_experts', 'specific_experts'),
             scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('hmoe')
def _hmoe(cfg, spec, base_rate):
  return HMoE(spec=spec, **_positive_ints(cfg, 'num_experts'),
              scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('star')
def _star(cfg, spec, base_rate):
  return STAR(spec=spec, **_positive_ints(cfg, 'scenario_embed_dim'),
              aux_hidden=_widths(cfg, 'star_aux_hidden'), pn_momentum=_pn_momentum(cfg),
              scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('sar_net')
def _sar_net(cfg, spec, base_rate):
  return SARNet(spec=spec, **_positive_ints(cfg, 'num_experts', 'specific_experts'),
                scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('m2m')
def _m2m(cfg, spec, base_rate):
  if int(cfg.m2m_meta_layers) < 0:
    raise ConfigError(f'model.m2m_meta_layers must be >= 0, got {cfg.m2m_meta_layers}')
  return M2M(spec=spec, **_positive_ints(cfg, 'scenario_embed_dim', 'num_experts'),
             attention_dim=_positive_ints(cfg, 'm2m_attention_dim')['m2m_attention_dim'],
             meta_layers=int(cfg.m2m_meta_layers), scenario_matmul=_scenario_matmul(cfg),
             **_common(cfg))


@register_model('adasparse')
def _adasparse(cfg, spec, base_rate):
  if cfg.adasparse_form not in ADASPARSE_FORMS:
    raise ConfigError(f'unknown model.adasparse_form {cfg.adasparse_form!r}; '
                     f'choose one of {ADASPARSE_FORMS}')
  if cfg.adasparse_beta < 1:
    raise ConfigError(f'model.adasparse_beta must be >= 1, got {cfg.adasparse_beta}')
  if not 0 < cfg.adasparse_epsilon < 1:
    raise ConfigError(f'model.adasparse_epsilon must lie in (0, 1), got {cfg.adasparse_epsilon}')
  if cfg.adasparse_alpha <= 0 or cfg.adasparse_alpha_step < 0:
    raise ConfigError(f'model.adasparse_alpha must be positive and model.adasparse_alpha_step >= 0, '
                     f'got {cfg.adasparse_alpha} and {cfg.adasparse_alpha_step}')
  if cfg.adasparse_sparsity_weight < 0:
    raise ConfigError(f'model.adasparse_sparsity_weight must be >= 0, '
                     f'got {cfg.adasparse_sparsity_weight}')
  r_range = tuple(float(r) for r in cfg.adasparse_sparsity_range)
  if len(r_range) != 2 or not 0 <= r_range[0] <= r_range[1] <= 1:
    raise ConfigError(f'model.adasparse_sparsity_range must be (r_min, r_max) with '
                     f'0 <= r_min <= r_max <= 1, got {tuple(cfg.adasparse_sparsity_range)}')
  return AdaSparse(spec=spec, **_positive_ints(cfg, 'scenario_embed_dim'),
                   form=cfg.adasparse_form, beta=float(cfg.adasparse_beta),
                   epsilon=float(cfg.adasparse_epsilon), alpha=float(cfg.adasparse_alpha),
                   alpha_step=float(cfg.adasparse_alpha_step),
                   sparsity_weight=float(cfg.adasparse_sparsity_weight),
                   sparsity_range=r_range, **_common(cfg))


def _pepnet_variant(cfg, spec, use_ep: bool, use_pp: bool):
  prior = tuple(cfg.pepnet_prior_fields)
  unknown = set(prior) - set(spec.cat_names) - set(spec.multi_names)
  if unknown:
    raise ConfigError(f'model.pepnet_prior_fields names unknown fields {sorted(unknown)}; known: '
                     f'{sorted((*spec.cat_names, *spec.multi_names))}')
  return PEPNet(spec=spec, **_positive_ints(cfg, 'scenario_embed_dim'), use_ep=use_ep,
                use_pp=use_pp, prior_fields=prior, **_common(cfg))


@register_model('pepnet')
def _pepnet(cfg, spec, base_rate):
  return _pepnet_variant(cfg, spec, use_ep=True, use_pp=True)


@register_model('epnet')
def _epnet(cfg, spec, base_rate):
  return _pepnet_variant(cfg, spec, use_ep=True, use_pp=False)


@register_model('ppnet')
def _ppnet(cfg, spec, base_rate):
  return _pepnet_variant(cfg, spec, use_ep=False, use_pp=True)


@register_model('apg')
def _apg(cfg, spec, base_rate):
  if cfg.apg_condition not in APG_CONDITIONS:
    raise ConfigError(f'unknown model.apg_condition {cfg.apg_condition!r}; '
                     f'choose one of {APG_CONDITIONS}')
  if int(cfg.apg_overparam) < 0:
    raise ConfigError(f'model.apg_overparam must be >= 0 (0 = off), got {cfg.apg_overparam}')
  return APG(spec=spec, **_positive_ints(cfg, 'scenario_embed_dim'), condition=cfg.apg_condition,
             rank=_positive_ints(cfg, 'apg_rank')['apg_rank'], overparam=int(cfg.apg_overparam),
             generate_bias=bool(cfg.apg_generate_bias),
             generator_hidden=_widths(cfg, 'apg_generator_hidden'), **_common(cfg))


@register_model('hamur')
def _hamur(cfg, spec, base_rate):
  n = _positive_ints(cfg, 'hamur_adapters', 'hamur_adapter_dim', 'hamur_rank')
  common = _common(cfg)
  if n['hamur_adapters'] > len(common['hidden']):
    raise ConfigError(f'model.hamur_adapters={n["hamur_adapters"]} exceeds the '
                     f'{len(common["hidden"])} hidden layers of model.hidden')
  return HAMUR(spec=spec, adapter_dim=n['hamur_adapter_dim'], rank=n['hamur_rank'],
               num_adapters=n['hamur_adapters'], hyper_hidden=_widths(cfg, 'hamur_hyper_hidden'),
               pn_momentum=_pn_momentum(cfg), scenario_matmul=_scenario_matmul(cfg), **common)


def build_model(model_config, spec: FeatureSpec, base_rate: float | None = None) -> nn.Module:
  """base_rate: mean training label (the trainer passes it); a builder may use it to initialise
  (`logistic`'s output bias) and must work without it."""
  name = model_config.name
  if name not in _BUILDERS:
    raise ConfigError(f'unknown config.model.name={name!r}; known: {model_names()}')
  if base_rate is not None and not 0.0 < float(base_rate) < 1.0:
    raise DataError(f'the training labels have base rate {base_rate}; it must lie in (0, 1) '
                    '(a split with only one class cannot train a classifier)')
  model = _BUILDERS[name](model_config, spec, None if base_rate is None else float(base_rate))
  return with_precision(model, model_config.get('dtype', 'float32'),
                        model_config.get('param_dtype', 'float32'))


__all__ = ['build_model', 'register_model', 'model_names']

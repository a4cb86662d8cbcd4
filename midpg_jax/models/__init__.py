"""The one model registry: `build_model(config.model, spec, base_rate)` for every model of the zoo.

Every model is a Linen module called as `model.apply(variables, batch, train=...)` and returns a
dict with `logits` (B,) and, when it has one, `mi_bound` (a scalar MI lower bound to maximise)
and `diagnostics` (a dict of scalars the trainer logs as train/<name>).
Sizes shared by all models (embedding dim, hidden widths, activation, dropout) come from the same
top-level config keys, so models are compared at equal backbone size. A model's own
hyper-parameters are its config block `config.model.<name>.*`: the defaults given to
`register_model` below (configs/default.py takes every block from `default_blocks()`), read and
checked by the model's builder only, so a new hyper-parameter is one edit here.
"""

from __future__ import annotations

from midpg_jax import mi
from midpg_jax.errors import ConfigError
from midpg_jax.models.baselines import Logistic, Mlp, SharedBottom
from midpg_jax.models.midpg import COMBINES, MIDPG
from midpg_jax.models.apg import APG, APG_CONDITIONS
from midpg_jax.models.gating import ADASPARSE_FORMS, AdaSparse, PEPNet
from midpg_jax.models.hamur import HAMUR
from midpg_jax.models.m2m import M2M
from midpg_jax.models.moe import HMoE, MMoE, PLE
from midpg_jax.models.registry import (Block, build_model, default_blocks, mi_weight, model_names,
                                       register_model, registered)
from midpg_jax.models.sar_net import SARNet
from midpg_jax.models.scenario_ops import check_path
from midpg_jax.models.star import STAR


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


def _scenario_embed_dim(cfg) -> int:
  if int(cfg.scenario_embed_dim) <= 0:
    raise ConfigError(f'model.scenario_embed_dim must be a positive integer, got '
                      f'{cfg.scenario_embed_dim}')
  return int(cfg.scenario_embed_dim)


def _scenario_matmul(cfg) -> str:
  """The one path choice of every model with per-scenario weights (MI-DPG and the zoo)."""
  return check_path(cfg.scenario_matmul)


def _pn_momentum(block: Block) -> float:
  if not 0 <= block.pn_momentum < 1:
    raise ConfigError(f'{block.path("pn_momentum")} must lie in [0, 1), got {block.pn_momentum}')
  return float(block.pn_momentum)


# Momentum of the running per-scenario statistics of partitioned normalisation (star, hamur):
# 0.9 is PyTorch BatchNorm's default (momentum=0.1), which the peers' code uses.
PN_MOMENTUM = 0.9
NUM_EXPERTS = 4  # shared experts (per level for ple)


# MI-DPG (our reconstruction; see midpg_jax/models/midpg.py and shared/docs/MIDPG.md).
@register_model(
    'midpg',
    rank=4,  # r: shared factors P (d_in, r), generated core (r, r), Q (r, d_out)
    specific_rank=4,  # r_s: per-scenario factors A_s (d_in, r_s), B_s (r_s, d_out)
    generator_hidden=(64,),
    # () = scenario only; field names make the generator instance-aware (set by the config
    # argument ':instance' / ':scenario', see configs/default.py with_generator_mode).
    generator_features=(),
    use_shared=True,
    use_specific=True,
    combine='modulate',  # 'modulate': W * (1 + M);  'replace': W = M (APG-style)
    mi_estimator='infonce',  # 'infonce' | 'jsd' | 'mine' | 'none'
    mi_weight=0.01,  # lambda in  L = BCE + lambda * (-MI bound); read by the trainer (mi_weight)
    mi_temperature=0.5,  # tau of the cosine critic (low tau saturates the bound at ln S)
    mi_dim=16,  # K: entries per layer of the fixed random sketch u_k^T M v_k the critic scores
)
def _midpg(cfg, b, spec, base_rate):
  if float(b.mi_weight) < 0:
    raise ConfigError(f'{b.path("mi_weight")} must be >= 0, got {b.mi_weight}')
  if float(b.mi_temperature) <= 0:
    raise ConfigError(f'{b.path("mi_temperature")} must be positive, got {b.mi_temperature}')
  use_shared, use_specific = bool(b.use_shared), bool(b.use_specific)
  combine = b.choice('combine', COMBINES)
  if combine == 'replace' and not (use_shared or use_specific):
    raise ConfigError(f"{b.path('combine')}='replace' needs {b.path('use_shared')} or "
                      f"{b.path('use_specific')}")
  return MIDPG(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg),
               rank=b.int_at_least('rank', 1), specific_rank=b.int_at_least('specific_rank', 1),
               generator_hidden=tuple(int(w) for w in b.generator_hidden),
               generator_features=b.fields('generator_features', spec),
               use_shared=use_shared, use_specific=use_specific, combine=combine,
               scenario_matmul=_scenario_matmul(cfg),
               mi_estimator=b.choice('mi_estimator', mi.ESTIMATORS),
               mi_dim=b.int_at_least('mi_dim', 1), mi_temperature=float(b.mi_temperature),
               **_common(cfg))


@register_model('mlp')
def _mlp(cfg, b, spec, base_rate):
  return Mlp(spec=spec, **_common(cfg))


@register_model('shared_bottom')
def _shared_bottom(cfg, b, spec, base_rate):
  return SharedBottom(spec=spec, scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('logistic')
def _logistic(cfg, b, spec, base_rate):
  return Logistic(spec=spec, base_rate=base_rate)


# ---- The multi-scenario zoo: each model's paper and our choices are in its module docstring.

@register_model('mmoe', num_experts=NUM_EXPERTS)
def _mmoe(cfg, b, spec, base_rate):
  return MMoE(spec=spec, num_experts=b.int_at_least('num_experts', 1),
              scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('ple', num_experts=NUM_EXPERTS, specific_experts=1)  # experts per scenario
def _ple(cfg, b, spec, base_rate):
  return PLE(spec=spec, num_experts=b.int_at_least('num_experts', 1),
             specific_experts=b.int_at_least('specific_experts', 1),
             scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('hmoe', num_experts=NUM_EXPERTS)
def _hmoe(cfg, b, spec, base_rate):
  return HMoE(spec=spec, num_experts=b.int_at_least('num_experts', 1),
              scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('star', aux_hidden=(32,),  # the auxiliary network on the scenario embedding
                pn_momentum=PN_MOMENTUM)
def _star(cfg, b, spec, base_rate):
  return STAR(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg),
              aux_hidden=b.widths('aux_hidden'), pn_momentum=_pn_momentum(b),
              scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('sar_net', num_experts=NUM_EXPERTS, specific_experts=1)
def _sar_net(cfg, b, spec, base_rate):
  return SARNet(spec=spec, num_experts=b.int_at_least('num_experts', 1),
                specific_experts=b.int_at_least('specific_experts', 1),
                scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model('m2m', num_experts=NUM_EXPERTS,
                attention_dim=32,  # meta attention width
                meta_layers=1)  # residual meta units in the meta tower
def _m2m(cfg, b, spec, base_rate):
  return M2M(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg),
             num_experts=b.int_at_least('num_experts', 1),
             attention_dim=b.int_at_least('attention_dim', 1),
             meta_layers=b.int_at_least('meta_layers', 0), scenario_matmul=_scenario_matmul(cfg),
             **_common(cfg))


@register_model(
    'adasparse',
    form='fusion',  # 'binarization' | 'scaling' | 'fusion'
    beta=2.0,  # scale of the scaling / fusion weighting factors
    epsilon=0.01,  # factors below it are pruned (binarization, fusion)
    alpha=1.0,  # sharpness of sigmoid(alpha v) at step 0 ...
    alpha_step=1e-4,  # ... growing by this much per training step
    sparsity_weight=0.01,  # flexible sparsity regulariser; 0 = off
    sparsity_range=(0.1, 0.5),  # [r_min, r_max] of each layer's pruned fraction
)
def _adasparse(cfg, b, spec, base_rate):
  if b.beta < 1:
    raise ConfigError(f'{b.path("beta")} must be >= 1, got {b.beta}')
  if not 0 < b.epsilon < 1:
    raise ConfigError(f'{b.path("epsilon")} must lie in (0, 1), got {b.epsilon}')
  if b.alpha <= 0 or b.alpha_step < 0:
    raise ConfigError(f'{b.path("alpha")} must be positive and {b.path("alpha_step")} >= 0, '
                      f'got {b.alpha} and {b.alpha_step}')
  if b.sparsity_weight < 0:
    raise ConfigError(f'{b.path("sparsity_weight")} must be >= 0, got {b.sparsity_weight}')
  r_range = tuple(float(r) for r in b.sparsity_range)
  if len(r_range) != 2 or not 0 <= r_range[0] <= r_range[1] <= 1:
    raise ConfigError(f'{b.path("sparsity_range")} must be (r_min, r_max) with '
                      f'0 <= r_min <= r_max <= 1, got {r_range}')
  return AdaSparse(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg),
                   form=b.choice('form', ADASPARSE_FORMS), beta=float(b.beta),
                   epsilon=float(b.epsilon), alpha=float(b.alpha),
                   alpha_step=float(b.alpha_step), sparsity_weight=float(b.sparsity_weight),
                   sparsity_range=r_range, **_common(cfg))


# PPNet's prior fields (the paper's id fields); () = all fields.
@register_model('pepnet', prior_fields=())
def _pepnet(cfg, b, spec, base_rate):
  return PEPNet(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg), use_ep=True, use_pp=True,
                prior_fields=b.fields('prior_fields', spec), **_common(cfg))


@register_model('epnet')
def _epnet(cfg, b, spec, base_rate):
  return PEPNet(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg), use_ep=True,
                use_pp=False, prior_fields=(), **_common(cfg))


@register_model('ppnet', prior_fields=())
def _ppnet(cfg, b, spec, base_rate):
  return PEPNet(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg), use_ep=False,
                use_pp=True, prior_fields=b.fields('prior_fields', spec), **_common(cfg))


@register_model(
    'apg',
    condition='scenario',  # 'scenario' | 'mixed' (scenario + features) | 'self' (layer input)
    rank=32,  # K: W = U (d_in, K) S(z) (K, K) V (K, d_out)
    overparam=0,  # P > 0: U = U_l (d_in, P) U_r (P, K), V likewise; merged after training
    generate_bias=False,
    generator_hidden=(64,),
)
def _apg(cfg, b, spec, base_rate):
  return APG(spec=spec, scenario_embed_dim=_scenario_embed_dim(cfg),
             condition=b.choice('condition', APG_CONDITIONS), rank=b.int_at_least('rank', 1),
             overparam=b.int_at_least('overparam', 0), generate_bias=bool(b.generate_bias),
             generator_hidden=b.widths('generator_hidden'),
             scenario_matmul=_scenario_matmul(cfg), **_common(cfg))


@register_model(
    'hamur',
    adapters=1,  # adapters, after the last hidden layers
    adapter_dim=32,  # adapter bottleneck width
    rank=16,  # K of the generated K x K adapter core
    hyper_hidden=(64,),  # the shared hyper-network
    pn_momentum=PN_MOMENTUM,
)
def _hamur(cfg, b, spec, base_rate):
  common = _common(cfg)
  adapters = b.int_at_least('adapters', 1)
  if adapters > len(common['hidden']):
    raise ConfigError(f'{b.path("adapters")}={adapters} exceeds the {len(common["hidden"])} '
                      'hidden layers of model.hidden')
  return HAMUR(spec=spec, adapter_dim=b.int_at_least('adapter_dim', 1),
               rank=b.int_at_least('rank', 1), num_adapters=adapters,
               hyper_hidden=b.widths('hyper_hidden'), pn_momentum=_pn_momentum(b),
               scenario_matmul=_scenario_matmul(cfg), **common)


__all__ = ['build_model', 'register_model', 'registered', 'model_names', 'default_blocks',
           'mi_weight']

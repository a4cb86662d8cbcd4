"""AdaSparse (`adasparse`): the backbone's neurons pruned and scaled per domain."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.errors import ConfigError
from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import activation
from midpg_jax.models.registry import register_model

ADASPARSE_FORMS = ('binarization', 'scaling', 'fusion')


class Pruner(nn.Module):
  """AdaSparse's domain-aware pruner: neuron weighting factors pi = F(W [e_d ⊕ h]).

  binarization: pi = 1[sigmoid(alpha v) >= eps], gradient of sigmoid(alpha v) (straight-through);
  scaling:      pi = beta sigmoid(v);
  fusion:       pi = beta sigmoid(alpha v), set to 0 where it is below eps.
  alpha grows during training so sigmoid(alpha v) approaches a step.
  """

  form: str = 'fusion'
  beta: float = 2.0
  epsilon: float = 0.01

  @nn.compact
  def __call__(self, domain: jax.Array, h: jax.Array, alpha: jax.Array) -> jax.Array:
    v = nn.Dense(h.shape[-1], use_bias=False, name='dense')(
        jnp.concatenate([domain, h], axis=-1))
    if self.form == 'scaling':
      return self.beta * jax.nn.sigmoid(v)
    soft = jax.nn.sigmoid(alpha * v)
    if self.form == 'binarization':
      hard = (soft >= self.epsilon).astype(soft.dtype)
      return soft + jax.lax.stop_gradient(hard - soft)
    if self.form == 'fusion':
      scaled = self.beta * soft
      return scaled * jax.lax.stop_gradient((scaled >= self.epsilon).astype(soft.dtype))
    raise ConfigError(f'unknown model.adasparse.form {self.form!r}; choose one of '
                      f'{ADASPARSE_FORMS}')


class AdaSparse(ScenarioModel):
  """Adaptively sparse structures per domain.

  Yang et al. "AdaSparse: Learning Adaptively Sparse Structures for Multi-Domain Click-Through
  Rate Prediction", CIKM 2022.

  A pruner per layer turns the domain embedding e_d (and the layer's neurons) into weighting
  factors pi_l that scale -- and, in the binarization / fusion forms, switch off -- the neurons:
  the domain-agnostic input features, then every hidden layer's output. The domain embedding is
  also an input of the backbone, beside the pruned features. A flexible sparsity regulariser keeps
  each layer's sparsity ratio r_l (fraction of pi = 0) inside [r_min, r_max]:
  aux_loss = weight * sum_l lambda_l mean(pi_l), lambda_l = +1 below r_min (push pi to 0),
  -1 above r_max, 0 inside (not for the scaling form, which never prunes).

  [our reading] The paper's exact regulariser coefficients and schedule are not reproduced: the
  range, weight, alpha's start and per-step increment are config values (alpha as in
  Scenario-Wise-Rec). The step count that drives alpha lives in the `counters` collection.
  """

  form: str = 'fusion'
  beta: float = 2.0
  epsilon: float = 0.01
  alpha: float = 1.0
  alpha_step: float = 1e-4
  sparsity_weight: float = 0.01
  sparsity_range: Sequence[float] = (0.1, 0.5)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, _ = self.embed(batch)
    scenario = jnp.asarray(batch['scenario'], jnp.int32)
    domain = self.embed_scenarios(scenario)
    steps = self.variable('counters', 'adasparse_steps', lambda: jnp.zeros((), jnp.int32))
    alpha = self.alpha + self.alpha_step * steps.value.astype(jnp.float32)
    alpha = alpha.astype(domain.dtype)  # the compute dtype (bfloat16 under mixed precision)
    if train and not self.is_initializing():
      steps.value = steps.value + 1
    pruner = lambda name: Pruner(self.form, self.beta, self.epsilon, name=name)  # noqa: E731
    factors = [pruner('pruner_input')(domain, x, alpha)]
    h = jnp.concatenate([domain, x * factors[0]], axis=-1)
    for l, width in enumerate(self.hidden):
      h = activation(self.act)(nn.Dense(width, name=f'dense_{l}')(h))
      h = self.drop(h, train)
      factors.append(pruner(f'pruner_{l}')(domain, h, alpha))
      h = h * factors[-1]
    outputs = {'logits': self.output_logit(h)}
    if self.sparsity_weight > 0 and self.form != 'scaling':  # scaling never prunes
      r_min, r_max = self.sparsity_range
      aux = 0.0
      for pi in factors:
        ratio = jax.lax.stop_gradient(jnp.mean((pi == 0).astype(jnp.float32)))
        sign = jnp.where(ratio < r_min, 1.0, jnp.where(ratio > r_max, -1.0, 0.0))
        aux = aux + sign * jnp.mean(pi.astype(jnp.float32))
      outputs['aux_loss'] = self.sparsity_weight * aux
    return outputs


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
def _build(cfg, b, spec, base_rate):
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
  return AdaSparse(spec=spec, form=b.choice('form', ADASPARSE_FORMS), beta=float(b.beta),
                   epsilon=float(b.epsilon), alpha=float(b.alpha),
                   alpha_step=float(b.alpha_step), sparsity_weight=float(b.sparsity_weight),
                   sparsity_range=r_range, **shared_fields(cfg))

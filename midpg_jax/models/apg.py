"""APG: adaptive parameter generation.

Yan et al. "APG: Adaptive Parameter Generation Network for Click-Through Rate Prediction",
NeurIPS 2022.

Every hidden layer's weight is generated per instance from a condition z, in the paper's
low-rank, shared-factor form W(z) = U S(z) V with U (d_in, K) and V (K, d_out) shared and only the
K x K core S(z) generated. The forward pass is decomposed, h W(z) = ((h U) S(z)) V, so no
(d_in, d_out) weight is ever built per example (nor per batch). Options, as in the paper:

* condition (`apg_condition`): 'scenario' (group-wise: the scenario embedding; S cores per
  batch), 'mixed' (mix-wise: the scenario embedding and the feature embeddings), 'self'
  (self-wise: the layer's own input h).
* over-parameterisation (`apg_overparam` = P > 0): U = U_l U_r (d_in x P, P x K) and V = V_l V_r
  (K x P, P x d_out) while training; `merge_overparam` folds them into U and V afterwards, giving
  the same outputs at the plain model's cost.
* generated bias (`apg_generate_bias`): b(z) from the generator's hidden state, added to b.

[our choices] Each layer has its own generator MLP; S(z) = I + g(z) / sqrt(K)
(`scenario_ops.generated_core`); the output layer is a plain dense layer.

With the 'scenario' condition there are only S cores, so (h U) S_s is a per-scenario matmul through
the path every model shares (`model.scenario_matmul`, scenario_ops.py): one (K, K) weight per tile,
not a (K, K) core gathered per row and a batched matrix-vector product per row, which ran at ~10 %
of the machine's matmul rate (docs/speed.md).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.errors import ConfigError
from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import MLP, activation
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import (Routing, apply_cores, generated_core, per_row,
                                           scenario_matmul)

APG_CONDITIONS = ('scenario', 'mixed', 'self')


class APGDense(nn.Module):
  """h -> ((h U) S(z)) V + b [+ b(z)]; z (N, d_z) with N = B, or N = S and `index` (B,) into it."""

  features: int
  rank: int
  overparam: int = 0
  generate_bias: bool = False
  generator_hidden: Sequence[int] = (64,)
  act: str = 'relu'

  def _factor(self, name: str, shape: tuple[int, int]) -> jax.Array:
    """A shared factor, over-parameterised as a product of two matrices when overparam > 0."""
    if not self.overparam:
      return self.param(name, nn.initializers.lecun_normal(), shape)
    left = self.param(f'{name}_left', nn.initializers.lecun_normal(), (shape[0], self.overparam))
    right = self.param(f'{name}_right', nn.initializers.lecun_normal(), (self.overparam, shape[1]))
    return left @ right

  @nn.compact
  def __call__(self, h: jax.Array, z: jax.Array, routing: Routing | None = None) -> jax.Array:
    """z (N, d_z): N = B per-row conditions (rows in batch order), or N = S scenario conditions
    with the `routing` of h's rows."""
    u = self._factor('U', (h.shape[-1], self.rank))
    v = self._factor('V', (self.rank, self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    g = MLP(tuple(self.generator_hidden), self.act, name='generator')(z)
    core = generated_core(nn.Dense(self.rank * self.rank, name='core')(g), self.rank)  # (N,K,K)
    if routing is None:
      hidden = apply_cores(h @ u, core)  # (B, K): one core per row
    else:
      hidden = scenario_matmul(h @ u, core, routing)  # (N, K): the row's scenario's core
    out = hidden @ v + bias
    if self.generate_bias:
      b = nn.Dense(self.features, name='generated_bias')(g)
      out = out + (b if routing is None else per_row(b, routing, 2))
    return out


class APG(ScenarioModel):
  uses_scenario_path = True
  condition: str = 'scenario'
  rank: int = 32
  overparam: int = 0
  generate_bias: bool = False
  generator_hidden: Sequence[int] = (64,)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    if self.condition not in APG_CONDITIONS:
      raise ConfigError(f'unknown model.apg.condition {self.condition!r}; '
                       f'choose one of {APG_CONDITIONS}')
    num_scen = self.num_scenarios
    scenario = jnp.asarray(batch['scenario'], jnp.int32)
    routing = None
    if self.condition == 'scenario':
      x, routing = self.embed_routed(batch)  # rows in the scenario path's order
      z = self.embed_scenarios(jnp.arange(num_scen))  # one core per scenario
    else:
      x, _ = self.embed(batch)
    if self.condition == 'mixed':
      z = jnp.concatenate([self.embed_scenarios(scenario), x], axis=-1)
    h = x
    for l, width in enumerate(self.hidden):
      layer = APGDense(width, self.rank, self.overparam, self.generate_bias,
                       tuple(self.generator_hidden), self.act, name=f'apg_{l}')
      h_in = h
      if self.condition == 'self':
        # Self-wise needs the scenario too (every model takes it): it joins the first input.
        h_in = jnp.concatenate([self.embed_scenarios(scenario), h], axis=-1) if l == 0 else h
        z = h_in
      h = activation(self.act)(layer(h_in, z, routing))
      h = self.drop(h, train)
    logits = self.output_logit(h)
    return {'logits': logits if routing is None else routing.restore(logits)}


def merge_overparam(params):
  """Params of an over-parameterised APG folded into those of the plain one (apg_overparam=0).

  Every `X_left`, `X_right` pair becomes X = X_left @ X_right; the merged model computes the same
  outputs with d_in K + K d_out shared weights per layer instead of (d_in + K) P + P (K + d_out).
  """
  if not isinstance(params, dict):
    return params
  merged = {}
  for key, value in params.items():
    if key.endswith('_left'):
      base = key[:-len('_left')]
      merged[base] = value @ params[f'{base}_right']
    elif not key.endswith('_right'):
      merged[key] = merge_overparam(value)
  return merged


@register_model(
    'apg',
    condition='scenario',  # 'scenario' | 'mixed' (scenario + features) | 'self' (layer input)
    rank=32,  # K: W = U (d_in, K) S(z) (K, K) V (K, d_out)
    overparam=0,  # P > 0: U = U_l (d_in, P) U_r (P, K), V likewise; merged after training
    generate_bias=False,
    generator_hidden=(64,),
)
def _build(cfg, b, spec, base_rate):
  return APG(spec=spec, condition=b.choice('condition', APG_CONDITIONS),
             rank=b.int_at_least('rank', 1),
             overparam=b.int_at_least('overparam', 0), generate_bias=bool(b.generate_bias),
             generator_hidden=b.widths('generator_hidden'), **shared_fields(cfg))

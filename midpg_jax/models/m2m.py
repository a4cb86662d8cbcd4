"""M2M: multi-scenario multi-task meta learning.

Zhang et al. "Leaving No One Behind: A Multi-Scenario Multi-Task Meta Learning Approach for
Advertiser Modeling", WSDM 2022.

* Scenario knowledge representation z_s: an MLP of the scenario embedding.
* Expert view: K shared experts on the feature input.
* Meta unit: a dense layer whose weight and bias are *generated* from z_s,
  MetaUnit(h) = act(h W(z_s) + b(z_s)).
* Meta attention: a_k = v^T MetaUnit(E_k); alpha = softmax_k(a); r = sum_k alpha_k E_k.
* Meta tower: residual meta units, h <- act(MetaUnit(h) + h), then the tower and output layer.

z depends on the scenario only, so W(z_s) takes S values per batch: the S generated weights
(S, d_in, d_out) are built once and applied per row with a grouped matmul (`scenario_ops`).

[our choices / omissions] The paper's Transformer encoder of the advertiser's behaviour sequences is
left out (the schema has no sequences); with one task the task representation, a constant, is
left out of the meta attention input; experts are MLPs over the bottom of the shared `hidden`
widths, followed by `m2m_meta_layers` residual meta units at the experts' width and the last
width as tower.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.models.base import NUM_EXPERTS, ScenarioModel, shared_fields
from midpg_jax.models.layers import MLP, activation
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import (ParallelMLP, Routing, per_row, scenario_matmul,
                                           split_hidden)


class MetaUnit(nn.Module):
  """h @ W(z_s) + b(z_s) (pre-activation) with W, b generated from z (S, d_z)."""

  features: int

  @nn.compact
  def __call__(self, h: jax.Array, z: jax.Array, routing: Routing) -> jax.Array:
    d_in = h.shape[-1]
    # Generated entries with variance ~1/d_in, as a lecun-initialised dense layer's.
    init = nn.initializers.variance_scaling(1.0 / d_in, 'fan_in', 'truncated_normal')
    w = nn.Dense(d_in * self.features, kernel_init=init, name='weight_generator')(z)
    b = nn.Dense(self.features, name='bias_generator')(z)  # (S, d_out)
    w = w.reshape(z.shape[0], d_in, self.features)  # (S, d_in, d_out)
    return scenario_matmul(h, w, routing) + per_row(b, routing, h.ndim)


class M2M(ScenarioModel):
  uses_scenario_path = True
  num_experts: int = 4
  attention_dim: int = 32
  meta_layers: int = 1

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.num_scenarios
    act = activation(self.act)
    x, routing = self.embed_routed(batch)
    scen = self.embed_scenarios(jnp.arange(num_scen))
    z = MLP((self.scenario_embed_dim,), self.act, name='scenario_knowledge')(scen)  # (S, d_z)
    bottom, top = split_hidden(self.hidden)
    experts = ParallelMLP(self.num_experts, bottom, self.act, self.dropout,
                          name='experts')(x, train)  # (K, B, d_e), expert-major
    # Row-major for the meta units: scenario_matmul routes along the leading (row) axis.
    experts = jnp.swapaxes(experts, 0, 1)  # (B, K, d_e)
    a = act(MetaUnit(self.attention_dim, name='meta_attention')(experts, z, routing))
    scores = nn.Dense(1, use_bias=False, name='attention_v')(a)[..., 0]  # (B, K)
    h = jnp.einsum('bk,bkd->bd', jax.nn.softmax(scores, axis=-1), experts)
    for l in range(self.meta_layers):
      h = act(MetaUnit(h.shape[-1], name=f'meta_tower_{l}')(h, z, routing) + h)
    h = MLP(top, self.act, self.dropout, name='tower')(h, train)
    logits = self.output_logit(h)
    return {'logits': routing.restore(logits)}


@register_model('m2m', num_experts=NUM_EXPERTS,
                attention_dim=32,  # meta attention width
                meta_layers=1)  # residual meta units in the meta tower
def _build(cfg, block, spec, base_rate):
  return M2M(spec=spec,              num_experts=block.int_at_least('num_experts', 1),
             attention_dim=block.int_at_least('attention_dim', 1),
             meta_layers=block.int_at_least('meta_layers', 0), **shared_fields(cfg))

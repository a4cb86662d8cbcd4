"""HAMUR: hyper adapters for multi-domain recommendation.

Li et al. "HAMUR: Hyper Adapter for Multi-Domain Recommendation", CIKM 2023.

* Backbone: one MLP tower per scenario (the multi-domain backbone the adapters plug into; as in
  the authors' Scenario-Wise-Rec code), widths = the shared `hidden`.
* Domain-specific adapter after the last `hamur_adapters` hidden layers: down-projection to
  `hamur_adapter_dim`, activation, up-projection, domain normalisation, residual:
  h <- h + Norm(act(h W_down + b_down) W_up + b_up).
* Domain-shared hyper-network: an MLP of the instance's features generates a K x K core M(x) per
  adapter; each adapter weight is W = U M(x) V (K = `hamur_rank`), applied decomposed,
  ((h U) M(x)) V, so no per-instance weight is built.

[our reading] "Domain-specific adapter": the static factors U, V and the biases of each adapter
are per scenario, and the generated core is shared by its down- and up-projection (as in the
authors' code). The domain norm is the partitioned normalisation of STAR (per-scenario statistics,
`star.PartitionedNorm`). The core is I + g(x) / sqrt(K) (`scenario_ops.generated_core`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from midpg_jax.errors import ConfigError
from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import MLP, activation
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import (Routing, ScenarioDense, apply_cores, generated_core,
                                           per_row, scenario_matmul, stacked_lecun)
from midpg_jax.models.star import PN_MOMENTUM, PartitionedNorm, pn_momentum


class HyperProjection(nn.Module):
  """h -> ((h U_s) M) V_s + b_s: a per-scenario low-rank weight around a per-instance core M."""

  features: int
  num_scenarios: int

  @nn.compact
  def __call__(self, h: jax.Array, core: jax.Array, routing: Routing) -> jax.Array:
    rank = core.shape[-1]
    u = self.param('U', stacked_lecun, (self.num_scenarios, h.shape[-1], rank))
    v = self.param('V', stacked_lecun, (self.num_scenarios, rank, self.features))
    b = self.param('bias', nn.initializers.zeros, (self.num_scenarios, self.features))
    t = apply_cores(scenario_matmul(h, u, routing), core)  # (B, K)
    return scenario_matmul(t, v, routing) + per_row(b, routing, 2)


class HAMUR(ScenarioModel):
  uses_scenario_path = True
  adapter_dim: int = 32
  rank: int = 16
  num_adapters: int = 1
  hyper_hidden: Sequence[int] = (64,)
  pn_momentum: float = 0.9

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.num_scenarios
    act = activation(self.act)
    x, routing = self.embed_routed(batch)
    g = MLP(tuple(self.hyper_hidden), self.act, name='hyper_network')(x)
    raw = nn.Dense(self.num_adapters * self.rank * self.rank, name='hyper_out')(g)
    cores = generated_core(raw.reshape(x.shape[0], self.num_adapters, -1), self.rank)
    first_adapted = len(self.hidden) - self.num_adapters
    h = x
    for l, width in enumerate(self.hidden):
      h = act(ScenarioDense(width, num_scen, name=f'backbone_{l}')(h, routing))
      h = self.drop(h, train)
      if l >= first_adapted:
        a = l - first_adapted
        core = cores[:, a]  # (B, K, K)
        t = act(HyperProjection(self.adapter_dim, num_scen, name=f'adapter_{a}_down')(
            h, core, routing))
        t = HyperProjection(width, num_scen, name=f'adapter_{a}_up')(t, core, routing)
        h = h + PartitionedNorm(num_scen, self.pn_momentum, name=f'adapter_{a}_norm')(
            t, routing, train)
    logits = ScenarioDense(1, num_scen, name='output')(h, routing)[:, 0]
    return {'logits': routing.restore(logits)}


@register_model(
    'hamur',
    adapters=1,  # adapters, after the last hidden layers
    adapter_dim=32,  # adapter bottleneck width
    rank=16,  # K of the generated K x K adapter core
    hyper_hidden=(64,),  # the shared hyper-network
    pn_momentum=PN_MOMENTUM,
)
def _build(cfg, b, spec, base_rate):
  shared = shared_fields(cfg)
  adapters = b.int_at_least('adapters', 1)
  if adapters > len(shared['hidden']):
    raise ConfigError(f'{b.path("adapters")}={adapters} exceeds the {len(shared["hidden"])} '
                      'hidden layers of model.hidden')
  return HAMUR(spec=spec, adapter_dim=b.int_at_least('adapter_dim', 1),
               rank=b.int_at_least('rank', 1), num_adapters=adapters,
               hyper_hidden=b.widths('hyper_hidden'), pn_momentum=pn_momentum(b), **shared)

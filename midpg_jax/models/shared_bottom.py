"""Shared-Bottom (`shared_bottom`): the standard multi-scenario baseline.

As in the peers' code (e.g. Scenario-Wise-Rec): a shared bottom MLP (all hidden widths but the
last) and one tower per scenario (the last hidden width and the output layer), each row going
through its own scenario's tower (`scenario_ops` routing, `model.scenario_matmul`).
"""

from __future__ import annotations

import flax.linen as nn

from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import MLP
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import ScenarioDense, ScenarioMLP, split_hidden


class SharedBottom(ScenarioModel):
  uses_scenario_path = True

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, routing = self.embed_routed(batch)  # (B, d_0), rows in the routing's order
    bottom, top = split_hidden(self.hidden)
    h = MLP(bottom, self.act, self.dropout, name='bottom')(x, train)
    num_scen = self.num_scenarios
    h = ScenarioMLP(top, num_scen, self.act, self.dropout, name='towers')(h, routing, train)
    logits = ScenarioDense(1, num_scen, name='tower_output')(h, routing)[:, 0]
    return {'logits': routing.restore(logits)}


@register_model('shared_bottom')
def _build(cfg, block, spec, base_rate):
  return SharedBottom(spec=spec, **shared_fields(cfg))

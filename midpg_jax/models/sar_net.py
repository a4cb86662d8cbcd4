"""SAR-Net: scenario-aware ranking network.

Shen, Tao, Zhang, Wen, Chen, Lu. "SAR-Net: A Scenario-Aware Ranking Network for Personalized Fair
Recommendation in Hundreds of Travel Scenarios", CIKM 2021.

What is implemented, from the paper:
* Scenario-specific linear transformation of the encoded features, x_s = x ⊙ w_s + b_s.
* Two groups of experts on x_s: `num_experts` scenario-shared experts and `specific_experts`
  experts per scenario (an example runs its own scenario's).
* A multi-scenario gating module: a softmax gate of the example's scenario over its scenario's
  experts and the shared ones fuses their outputs; a shared tower gives the logit.

Not implemented, because our data cannot feed them:
* The cross-scenario behaviour extraction (two attention modules over the user's behaviour
  sequence, queried by scenario features and by item features): the schema has no behaviour
  sequences and does not mark which fields are scenario / item features; multi-valued fields are
  mean-pooled by `FeatureEmbedding` as in every model.
* The debias part of the experts and the Fairness Coefficient: they weigh each sample by how much
  its exposure was changed by manual promotion, which no dataset here records. Without it a debias
  expert is a plain expert.

[our choices] w_s starts at one and b_s at zero (identity transform); experts are MLPs over the
bottom of the shared `hidden` widths and the tower the last width (`split_hidden`).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from midpg_jax.models.base import NUM_EXPERTS, ScenarioModel, shared_fields
from midpg_jax.models.layers import MLP
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import (ParallelMLP, ScenarioGate, ScenarioMLP, mix_experts,
                                           per_row, split_hidden)


class SARNet(ScenarioModel):
  uses_scenario_path = True
  num_experts: int = 4
  specific_experts: int = 1

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.num_scenarios
    x, routing = self.embed_routed(batch)
    d = x.shape[-1]
    w = self.param('transform_scale', nn.initializers.ones, (num_scen, d))
    b = self.param('transform_bias', nn.initializers.zeros, (num_scen, d))
    xs = x * per_row(w, routing, 2) + per_row(b, routing, 2)
    bottom, top = split_hidden(self.hidden)
    shared = ParallelMLP(self.num_experts, bottom, self.act, self.dropout,
                         name='shared_experts')(xs, train)  # (n, B, d_e), expert-major
    specific = [ScenarioMLP(bottom, num_scen, self.act, self.dropout,
                            name=f'specific_expert_{j}')(xs, routing, train)
                for j in range(self.specific_experts)]
    experts = jnp.concatenate([shared, jnp.stack(specific, axis=0)], axis=0)  # (n + m, B, d_e)
    gate = ScenarioGate(experts.shape[0], num_scen, name='gate')(xs, routing)
    h = mix_experts(gate, experts)  # (B, d_e)
    h = MLP(top, self.act, self.dropout, name='tower')(h, train)
    logits = self.output_logit(h)
    return {'logits': routing.restore(logits)}


@register_model('sar_net', num_experts=NUM_EXPERTS, specific_experts=1)
def _build(cfg, block, spec, base_rate):
  return SARNet(spec=spec, num_experts=block.int_at_least('num_experts', 1),
                specific_experts=block.int_at_least('specific_experts', 1), **shared_fields(cfg))

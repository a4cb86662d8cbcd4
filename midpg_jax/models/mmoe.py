"""MMoE: multi-gate mixture-of-experts, one gate and tower per scenario.

Scenarios play the role of the tasks of the multi-task papers: every example belongs to one
scenario and uses that scenario's gate and tower (Scenario-Wise-Rec's multi-domain reading).
Sizes: experts are MLPs over the bottom of the shared `hidden` widths, towers the last width plus
the output layer (`scenario_ops.split_hidden`), so each model's per-example path has the
backbone's depth and widths.
"""

from __future__ import annotations

import flax.linen as nn

from midpg_jax.models.base import NUM_EXPERTS, ScenarioModel, shared_fields
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import (ParallelMLP, ScenarioDense, ScenarioGate, ScenarioMLP,
                                           mix_experts, split_hidden)


class MMoE(ScenarioModel):
  """Multi-gate Mixture-of-Experts.

  Ma, Zhao, Yi, Chen, Hong, Chi. "Modeling Task Relationships in Multi-task Learning with
  Multi-gate Mixture-of-Experts", KDD 2018.

  K shared experts f_k; per scenario s a softmax gate g_s(x) = softmax(W_s x) and a tower h_s;
  an example of scenario s predicts h_s(sum_k g_s(x)_k f_k(x)).
  """
  uses_scenario_path = True

  num_experts: int = 4

  @nn.nowrap
  def shared_experts(self, x, train: bool):
    """The K shared experts f_k(x) over the bottom widths (submodule 'experts'): (K, B, d),
    expert-major (XLA:CPU batches a matmul over experts only with that axis leading)."""
    bottom, _ = split_hidden(self.hidden)
    return ParallelMLP(self.num_experts, bottom, self.act, self.dropout, name='experts')(x, train)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.num_scenarios
    x, routing = self.embed_routed(batch)
    _, top = split_hidden(self.hidden)
    experts = self.shared_experts(x, train)  # (K, B, d)
    gate = ScenarioGate(self.num_experts, num_scen, name='gate')(x, routing)  # (B, K)
    h = mix_experts(gate, experts)  # (B, d)
    h = ScenarioMLP(top, num_scen, self.act, self.dropout, name='tower')(h, routing, train)
    logits = ScenarioDense(1, num_scen, name='output')(h, routing)[:, 0]
    return {'logits': routing.restore(logits)}


@register_model('mmoe', num_experts=NUM_EXPERTS)
def _build(cfg, block, spec, base_rate):
  return MMoE(spec=spec, num_experts=block.int_at_least('num_experts', 1), **shared_fields(cfg))

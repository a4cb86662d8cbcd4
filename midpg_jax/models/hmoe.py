"""HMoE (`hmoe`): an MMoE (mmoe.py: shared experts, one gate and tower per scenario) whose
scenarios' scores a gate of the example's own scenario mixes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.models.base import NUM_EXPERTS, shared_fields
from midpg_jax.models.mmoe import MMoE
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import ParallelMLP, ScenarioGate, stacked_lecun, split_hidden


class HMoE(MMoE):
  """Hybrid of implicit and explicit Mixture-of-Experts.

  Li, Li, Da, Zeng, Zhang. "Improving Multi-Scenario Learning to Rank in E-commerce by Exploiting
  Task Relationships in the Label Space", CIKM 2020.

  Implicit part (feature space): an MMoE whose S towers give a score l_t(x) for every scenario t.
  Explicit part (label space): a gate of the example's scenario s mixes all scenarios' scores,
  logit = sum_t w_{s,t}(x) l_t(x). Task-constrained back-propagation: the loss of an example of
  scenario s trains only tower s through the scores; the other scenarios' scores are constants
  (stop-gradient) there, while the explicit gate learns from every example.

  [our choice] Scores are mixed as logits (the paper's LTR scores are unbounded too); the explicit
  gate reads the feature input x.
  """

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.num_scenarios
    x, routing = self.embed_routed(batch)
    _, top = split_hidden(self.hidden)
    experts = self.shared_experts(x, train)  # (K, B, d), MMoE's experts
    gate_kernel = self.param('gates_kernel', stacked_lecun, (num_scen, x.shape[-1],
                                                             self.num_experts))
    gate_bias = self.param('gates_bias', nn.initializers.zeros, (num_scen, self.num_experts))
    gates = jax.nn.softmax(jnp.einsum('bi,sik->bsk', x, gate_kernel) + gate_bias)  # (B, S, K)
    h = jnp.einsum('bsk,kbd->sbd', gates, experts)  # (S, B, d) every scenario's mixture
    # Every scenario's tower on every example: stacked kernels over the scenario axis, in the
    # scenario-major layout ParallelMLP computes in.
    h = ParallelMLP(num_scen, top, self.act, self.dropout, name='towers')(h, train)  # (S, B, w)
    out_kernel = self.param('output_kernel', stacked_lecun, (num_scen, h.shape[-1], 1))
    out_bias = self.param('output_bias', nn.initializers.zeros, (num_scen,))
    scores = jnp.einsum('sbi,sio->bs', h, out_kernel) + out_bias  # (B, S)
    own = routing.one_hot(scores.dtype)
    scores = own * scores + (1.0 - own) * jax.lax.stop_gradient(scores)
    mix = ScenarioGate(num_scen, num_scen, name='explicit_gate')(x, routing)  # (B, S)
    logits = jnp.sum(mix * scores, axis=-1)
    return {'logits': routing.restore(logits)}


@register_model('hmoe', num_experts=NUM_EXPERTS)
def _build(cfg, block, spec, base_rate):
  return HMoE(spec=spec, num_experts=block.int_at_least('num_experts', 1), **shared_fields(cfg))

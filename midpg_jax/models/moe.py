"""Mixture-of-experts models with one gate and tower per scenario: MMoE, PLE, HMoE.

Scenarios play the role of the tasks of the multi-task papers: every example belongs to one
scenario and uses that scenario's gate and tower (Scenario-Wise-Rec's multi-domain reading).
Sizes: experts are MLPs over the bottom of the shared `hidden` widths, towers the last width plus
the output layer (`scenario_ops.split_hidden`), so each model's per-example path has the
backbone's depth and widths.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.layers import activation
from midpg_jax.models.scenario_ops import (ParallelMLP, ScenarioDense, ScenarioGate, ScenarioMLP,
                                           embed_and_route, split_hidden, stacked_lecun)


class MMoE(nn.Module):
  """Multi-gate Mixture-of-Experts.

  Ma, Zhao, Yi, Chen, Hong, Chi. "Modeling Task Relationships in Multi-task Learning with
  Multi-gate Mixture-of-Experts", KDD 2018.

  K shared experts f_k; per scenario s a softmax gate g_s(x) = softmax(W_s x) and a tower h_s;
  an example of scenario s predicts h_s(sum_k g_s(x)_k f_k(x)).
  """

  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  num_experts: int = 4
  scenario_matmul: str = 'auto'

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.spec.num_scenarios
    x, routing = embed_and_route(self, batch)
    bottom, top = split_hidden(self.hidden)
    experts = ParallelMLP(self.num_experts, bottom, self.act, self.dropout,
                          name='experts')(x, train)  # (B, K, d)
    gate = ScenarioGate(self.num_experts, num_scen, name='gate')(x, routing)  # (B, K)
    h = jnp.einsum('bk,bkd->bd', gate, experts)
    h = ScenarioMLP(top, num_scen, self.act, self.dropout, name='tower')(h, routing, train)
    logits = ScenarioDense(1, num_scen, name='output')(h, routing)[:, 0]
    return {'logits': routing.restore(logits)}


class PLE(nn.Module):
  """Progressive Layered Extraction.

  Tang, Liu, Zhao, Gong. "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
  Model for Personalized Recommendations", RecSys 2020.

  Each extraction level (a CGC layer) has `specific_experts` experts per scenario and
  `num_experts` shared experts. Scenario s's gate mixes its own experts and the shared ones,
  applied to scenario s's path; below the last level a shared gate mixes *all* experts into the
  shared path, which is how scenarios exchange information progressively. As in the paper every
  path is computed for every example (S + 1 paths); an example's prediction reads its own
  scenario's path and tower.

  [our choice] One extraction level per bottom width of the shared `hidden`, each expert one dense
  layer of that width, so PLE's depth equals the backbone's.
  """

  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  num_experts: int = 4  # shared experts per level
  specific_experts: int = 1  # experts per scenario per level
  scenario_matmul: str = 'auto'

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen, m, n = self.spec.num_scenarios, self.specific_experts, self.num_experts
    x, routing = embed_and_route(self, batch)
    levels, top = split_hidden(self.hidden)
    act = activation(self.act)
    paths = jnp.broadcast_to(x[:, None], (x.shape[0], num_scen, x.shape[-1]))  # (B, S, d)
    shared = x  # (B, d)
    for j, width in enumerate(levels):
      last = j == len(levels) - 1
      d_in = shared.shape[-1]
      spec_kernel = self.param(f'level_{j}_specific_kernel', nn.initializers.lecun_normal(
          in_axis=-2, out_axis=-1, batch_axis=(0, 1)), (num_scen, m, d_in, width))
      spec_bias = self.param(f'level_{j}_specific_bias', nn.initializers.zeros,
                             (num_scen, m, width))
      specific = act(jnp.einsum('bsi,smio->bsmo', paths, spec_kernel) + spec_bias)  # (B,S,m,w)
      shared_out = ParallelMLP(n, (width,), self.act, name=f'level_{j}_shared')(shared)  # (B,n,w)
      if self.dropout > 0:
        drop = nn.Dropout(self.dropout, deterministic=not train)
        specific, shared_out = drop(specific), drop(shared_out)
      gate_kernel = self.param(f'level_{j}_gate_kernel', stacked_lecun, (num_scen, d_in, m + n))
      gate_bias = self.param(f'level_{j}_gate_bias', nn.initializers.zeros, (num_scen, m + n))
      gates = jax.nn.softmax(jnp.einsum('bsi,sie->bse', paths, gate_kernel) + gate_bias)
      own = jnp.concatenate(
          [specific, jnp.broadcast_to(shared_out[:, None], (x.shape[0], num_scen, n, width))],
          axis=2)  # (B, S, m + n, w): scenario s's experts and the shared ones
      new_paths = jnp.einsum('bse,bsew->bsw', gates, own)
      if not last:
        every = jnp.concatenate([specific.reshape(x.shape[0], num_scen * m, width), shared_out],
                                axis=1)  # (B, S*m + n, w)
        shared_gate = jax.nn.softmax(nn.Dense(num_scen * m + n, name=f'level_{j}_shared_gate')(
            shared))
        shared = jnp.einsum('be,bew->bw', shared_gate, every)
      paths = new_paths
    h = jnp.take_along_axis(paths, routing.scenario[:, None, None], axis=1)[:, 0]  # own path
    h = ScenarioMLP(top, num_scen, self.act, self.dropout, name='tower')(h, routing, train)
    logits = ScenarioDense(1, num_scen, name='output')(h, routing)[:, 0]
    return {'logits': routing.restore(logits)}


class HMoE(nn.Module):
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

  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  num_experts: int = 4
  scenario_matmul: str = 'auto'

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.spec.num_scenarios
    x, routing = embed_and_route(self, batch)
    bottom, top = split_hidden(self.hidden)
    experts = ParallelMLP(self.num_experts, bottom, self.act, self.dropout,
                          name='experts')(x, train)  # (B, K, d)
    gate_kernel = self.param('gates_kernel', stacked_lecun, (num_scen, x.shape[-1],
                                                             self.num_experts))
    gate_bias = self.param('gates_bias', nn.initializers.zeros, (num_scen, self.num_experts))
    gates = jax.nn.softmax(jnp.einsum('bi,sik->bsk', x, gate_kernel) + gate_bias)  # (B, S, K)
    h = jnp.einsum('bsk,bkd->bsd', gates, experts)  # every scenario's mixture
    # Every scenario's tower on every example: stacked kernels over the scenario axis.
    h = ParallelMLP(num_scen, top, self.act, self.dropout, name='towers')(h, train)
    out_kernel = self.param('output_kernel', stacked_lecun, (num_scen, h.shape[-1], 1))
    out_bias = self.param('output_bias', nn.initializers.zeros, (num_scen,))
    scores = jnp.einsum('bsi,sio->bso', h, out_kernel)[..., 0] + out_bias  # (B, S)
    own = routing.one_hot(scores.dtype)
    scores = own * scores + (1.0 - own) * jax.lax.stop_gradient(scores)
    mix = ScenarioGate(num_scen, num_scen, name='explicit_gate')(x, routing)  # (B, S)
    logits = jnp.sum(mix * scores, axis=-1)
    return {'logits': routing.restore(logits)}

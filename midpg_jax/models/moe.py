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
                                           StackedWeights, embed_and_route, mix_experts, per_row,
                                           scenario_matmul, split_hidden, stacked_lecun)


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
                          name='experts')(x, train)  # (K, B, d), expert-major
    gate = ScenarioGate(self.num_experts, num_scen, name='gate')(x, routing)  # (B, K)
    h = mix_experts(gate, experts)  # (B, d)
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
    drop = (nn.Dropout(self.dropout, deterministic=not train) if self.dropout > 0
            else lambda t: t)
    # Same function and parameters as computing all S + 1 paths at every level, arranged for
    # speed (README "Speed"): every matmul of a level that reads one input is ONE matmul, and
    # the last level computes only the row's own path (the only one read after it).
    # `paths`: None while every scenario's path equals `shared` (level 0's input); else (S, B, d)
    # every scenario's path; before the last level (B, d) the row's own path.
    shared, paths = x, None  # shared: (B, d)
    for j, width in enumerate(levels):
      last = j == len(levels) - 1
      d_in, b = shared.shape[-1], shared.shape[0]
      spec_kernel = self.param(f'level_{j}_specific_kernel', nn.initializers.lecun_normal(
          in_axis=-2, out_axis=-1, batch_axis=(0, 1)), (num_scen, m, d_in, width))
      spec_bias = self.param(f'level_{j}_specific_bias', nn.initializers.zeros,
                             (num_scen, m, width))
      shared_kernel, shared_bias = StackedWeights(
          'kernel_0', 'bias_0', (n, d_in, width), name=f'level_{j}_shared')()
      gate_kernel = self.param(f'level_{j}_gate_kernel', stacked_lecun, (num_scen, d_in, m + n))
      gate_bias = self.param(f'level_{j}_gate_bias', nn.initializers.zeros, (num_scen, m + n))
      # Per scenario, its m experts and its gate side by side: (S, d_in, C), C = m w + m + n.
      own_kernel = jnp.concatenate([jnp.transpose(spec_kernel, (0, 2, 1, 3)).reshape(
          num_scen, d_in, m * width), gate_kernel], axis=-1)
      own_bias = jnp.concatenate([spec_bias.reshape(num_scen, m * width), gate_bias], axis=-1)
      experts_kernel = jnp.transpose(shared_kernel, (1, 0, 2)).reshape(d_in, n * width)
      if last:  # the row's own scenario's experts and gate only
        own_in = shared if paths is None else paths  # (B, d)
        own = scenario_matmul(own_in, own_kernel, routing) + per_row(own_bias, routing, 2)
        shared_out = (shared @ experts_kernel).reshape(b, n, width) + shared_bias
        specific = drop(act(own[:, :m * width].reshape(b, m, width)))  # (B, m, w)
        gates = jax.nn.softmax(own[:, m * width:])  # (B, m + n)
        shared_out = drop(act(shared_out))  # (B, n, w)
        paths = (jnp.einsum('bm,bmw->bw', gates[:, :m], specific)
                 + jnp.einsum('bn,bnw->bw', gates[:, m:], shared_out))
        break
      gate_w, gate_b = StackedWeights('kernel', 'bias', (d_in, num_scen * m + n),
                                      name=f'level_{j}_shared_gate')()
      shared_cols = [experts_kernel, gate_w]  # one (B, d) x (d, n w + S m + n) matmul
      if paths is None:  # every scenario's experts and gate read `shared` too: same matmul
        shared_cols.insert(0, jnp.transpose(own_kernel, (1, 0, 2)).reshape(d_in, -1))
      out = shared @ jnp.concatenate(shared_cols, axis=-1)
      if paths is None:
        own, out = out[:, :own_kernel.shape[0] * own_kernel.shape[-1]], \
            out[:, own_kernel.shape[0] * own_kernel.shape[-1]:]
        own = own.reshape(b, num_scen, -1) + own_bias  # (B, S, C)
      else:
        own = jnp.einsum('sbi,sic->bsc', paths, own_kernel) + own_bias
      specific = drop(act(own[..., :m * width].reshape(b, num_scen, m, width)))  # (B, S, m, w)
      gates = jax.nn.softmax(own[..., m * width:])  # (B, S, m + n)
      shared_out = drop(act(out[:, :n * width].reshape(b, n, width) + shared_bias))  # (B, n, w)
      shared_gate = jax.nn.softmax(out[:, n * width:] + gate_b)  # (B, S m + n)
      # Below the last level the shared gate mixes *all* experts into the shared path.
      shared = (jnp.einsum('be,bew->bw', shared_gate[:, :num_scen * m],
                           specific.reshape(b, num_scen * m, width))
                + jnp.einsum('bn,bnw->bw', shared_gate[:, num_scen * m:], shared_out))
      if j + 1 == len(levels) - 1:  # next is the last level: only the row's own path
        idx = routing.scenario
        own_gates = jnp.take_along_axis(gates, idx[:, None, None], axis=1)[:, 0]  # (B, m + n)
        own_specific = jnp.take_along_axis(specific, idx[:, None, None, None], axis=1)[:, 0]
        paths = (jnp.einsum('bm,bmw->bw', own_gates[:, :m], own_specific)
                 + jnp.einsum('bn,bnw->bw', own_gates[:, m:], shared_out))
      else:
        paths = (jnp.einsum('bsm,bsmw->sbw', gates[..., :m], specific)
                 + jnp.einsum('bsn,bnw->sbw', gates[..., m:], shared_out))  # (S, B, w)
    h = ScenarioMLP(top, num_scen, self.act, self.dropout, name='tower')(paths, routing, train)
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
                          name='experts')(x, train)  # (K, B, d), expert-major
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

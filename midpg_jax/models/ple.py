"""PLE: progressive layered extraction, one gate and tower per scenario.

As in MMoE (mmoe.py) the scenarios play the role of the multi-task paper's tasks: an example
uses its own scenario's gate, path and tower.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.models.base import NUM_EXPERTS, ScenarioModel, shared_fields
from midpg_jax.models.layers import activation
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import (ScenarioDense, ScenarioMLP, StackedWeights, per_row,
                                           scenario_matmul, split_hidden, stacked_lecun)


class PLE(ScenarioModel):
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
  uses_scenario_path = True

  num_experts: int = 4  # shared experts per level
  specific_experts: int = 1  # experts per scenario per level

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen, m, n = self.num_scenarios, self.specific_experts, self.num_experts
    x, routing = self.embed_routed(batch)
    levels, top = split_hidden(self.hidden)
    act = activation(self.act)
    drop = (nn.Dropout(self.dropout, deterministic=not train) if self.dropout > 0
            else lambda t: t)
    # Same function and parameters as computing all S + 1 paths at every level, arranged for
    # speed (docs/speed.md): every matmul of a level that reads one input is ONE matmul, and
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


@register_model('ple', num_experts=NUM_EXPERTS, specific_experts=1)  # experts per scenario
def _build(cfg, block, spec, base_rate):
  return PLE(spec=spec, num_experts=block.int_at_least('num_experts', 1),
             specific_experts=block.int_at_least('specific_experts', 1), **shared_fields(cfg))

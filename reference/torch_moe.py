"""PyTorch references of MMoE and PLE (midpg_jax/models/mmoe.py, ple.py): experts and gates as
lists of nn.Linear, a tower per scenario on its rows. See reference/torch_zoo.py."""

from __future__ import annotations

import torch
from torch import nn

from reference.torch_midpg import FeatureEmbedding
from reference.torch_zoo import (ACT_MODULES, bind_linear, bind_towers, linear, mlp,
                                 per_scenario, scenario_towers, split_hidden)


class TorchMMoE(nn.Module):
  """MMoE: K shared experts, per scenario a softmax gate and a tower."""

  def __init__(self, spec, hidden=(256, 128, 64), embed_dim=16, act='relu', num_experts=4,
               scenario_loop='subset'):
    super().__init__()
    S = self.num_scenarios = spec.num_scenarios
    self.loop = scenario_loop
    self.features = FeatureEmbedding(spec, embed_dim)
    d, (bottom, top) = self.features.out_dim, split_hidden(hidden)
    self.experts = nn.ModuleList(nn.Sequential(*mlp(d, bottom, act)) for _ in range(num_experts))
    self.gates = nn.ModuleList(linear(d, num_experts) for _ in range(S))
    self.towers = scenario_towers(S, bottom[-1], top, act)

  def forward(self, batch):
    x, _ = self.features(batch)
    experts = torch.stack([e(x) for e in self.experts], 1)  # (B, K, d)

    def scenario_head(s, xs, es):
      gate = torch.softmax(self.gates[s](xs), -1)  # (b, K)
      return self.towers[s](torch.einsum('bk,bkd->bd', gate, es))

    logits = per_scenario(scenario_head, batch['scenario'].long(), self.num_scenarios, self.loop,
                          x, experts)
    return {'logits': logits[:, 0]}

  def flax_bindings(self):
    S, K = self.num_scenarios, len(self.experts)
    out = bind_linear(('gate', 'dense'), self.gates, (S,))
    per_expert = [[m for m in e if isinstance(m, nn.Linear)] for e in self.experts]
    for i in range(len(per_expert[0])):
      stacked = bind_linear(('experts',), [ls[i] for ls in per_expert], (K,))
      out[('experts', f'kernel_{i}')] = stacked[('experts', 'kernel')]
      out[('experts', f'bias_{i}')] = stacked[('experts', 'bias')]
    out.update(bind_towers(self.towers, S))
    return out

  def flax_state(self):
    return {}


class CGCLevel(nn.Module):
  """One PLE extraction level: per-scenario and shared experts, per-scenario gates, and (below the
  last level) a shared gate over all experts."""

  def __init__(self, S, d_in, width, specific, shared, last, act):
    super().__init__()
    self.specific = nn.ModuleList(nn.ModuleList(linear(d_in, width) for _ in range(specific))
                                  for _ in range(S))
    self.shared = nn.ModuleList(linear(d_in, width) for _ in range(shared))
    self.gates = nn.ModuleList(linear(d_in, specific + shared) for _ in range(S))
    self.shared_gate = None if last else linear(d_in, S * specific + shared)
    self.act = ACT_MODULES[act]()

  def forward(self, paths: list, shared: torch.Tensor):
    specific = [[self.act(e(p)) for e in experts] for experts, p in zip(self.specific, paths)]
    shared_out = [self.act(e(shared)) for e in self.shared]
    new_paths = []
    for s, p in enumerate(paths):
      gate = torch.softmax(self.gates[s](p), -1)  # (B, m + n)
      new_paths.append(torch.einsum('be,bew->bw', gate, torch.stack(specific[s] + shared_out, 1)))
    if self.shared_gate is not None:
      every = torch.stack([e for experts in specific for e in experts] + shared_out, 1)
      shared = torch.einsum('be,bew->bw', torch.softmax(self.shared_gate(shared), -1), every)
    return new_paths, shared


class TorchPLE(nn.Module):
  """PLE: CGC levels (every scenario's path on every row), then the row's own path and tower."""

  def __init__(self, spec, hidden=(256, 128, 64), embed_dim=16, act='relu', num_experts=4,
               specific_experts=1, scenario_loop='subset'):
    super().__init__()
    S = self.num_scenarios = spec.num_scenarios
    self.loop, self.m, self.n = scenario_loop, specific_experts, num_experts
    self.features = FeatureEmbedding(spec, embed_dim)
    levels, top = split_hidden(hidden)
    dims = [self.features.out_dim, *levels]
    self.levels = nn.ModuleList(
        CGCLevel(S, a, b, specific_experts, num_experts, j == len(levels) - 1, act)
        for j, (a, b) in enumerate(zip(dims, dims[1:])))
    self.towers = scenario_towers(S, levels[-1], top, act)

  def forward(self, batch):
    x, _ = self.features(batch)
    paths, shared = [x] * self.num_scenarios, x
    for level in self.levels:
      paths, shared = level(paths, shared)
    paths = torch.stack(paths, 1)  # (B, S, w)
    logits = per_scenario(lambda s, p: self.towers[s](p[:, s]), batch['scenario'].long(),
                          self.num_scenarios, self.loop, paths)
    return {'logits': logits[:, 0]}

  def flax_bindings(self):
    S, m, n = self.num_scenarios, self.m, self.n
    out = {}
    for j, level in enumerate(self.levels):
      spec = bind_linear((), [e for experts in level.specific for e in experts], (S, m))
      out[(f'level_{j}_specific_kernel',)] = spec[('kernel',)]
      out[(f'level_{j}_specific_bias',)] = spec[('bias',)]
      shared = bind_linear((), level.shared, (n,))
      out[(f'level_{j}_shared', 'kernel_0')] = shared[('kernel',)]
      out[(f'level_{j}_shared', 'bias_0')] = shared[('bias',)]
      gates = bind_linear((), level.gates, (S,))
      out[(f'level_{j}_gate_kernel',)] = gates[('kernel',)]
      out[(f'level_{j}_gate_bias',)] = gates[('bias',)]
      if level.shared_gate is not None:
        out.update(bind_linear((f'level_{j}_shared_gate',), level.shared_gate))
    out.update(bind_towers(self.towers, S))
    return out

  def flax_state(self):
    return {}

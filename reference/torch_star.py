"""PyTorch reference of STAR (midpg_jax/models/star.py), in the Scenario-Wise-Rec style: one
slot weight per domain, a loop over the domains' rows. See reference/torch_zoo.py."""

from __future__ import annotations

import torch
from torch import nn

from reference import torch_midpg as tm
from reference.torch_midpg import FeatureEmbedding
from reference.torch_zoo import ACT_MODULES, Bind, bind_linear, linear, mlp, per_scenario


class TorchSTAR(nn.Module):
  """STAR: partitioned normalisation, star-topology FCN (W_s * W, b_s + b), auxiliary network."""

  def __init__(self, spec, hidden=(256, 128, 64), embed_dim=16, act='relu', scenario_embed_dim=16,
               aux_hidden=(32,), pn_momentum=0.9, scenario_loop='subset', eps=1e-5):
    super().__init__()
    S = self.num_scenarios = spec.num_scenarios
    self.loop, self.momentum, self.eps = scenario_loop, pn_momentum, eps
    self.act = ACT_MODULES[act]()
    self.features = FeatureEmbedding(spec, embed_dim)
    d = self.features.out_dim
    # Partitioned normalisation: shared and per-scenario scale / shift, per-scenario statistics.
    self.pn_scale, self.pn_bias = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
    self.pn_scenario_scale = nn.ParameterList(nn.Parameter(torch.ones(d)) for _ in range(S))
    self.pn_scenario_bias = nn.ParameterList(nn.Parameter(torch.zeros(d)) for _ in range(S))
    self.register_buffer('running_mean', torch.zeros(S, d))
    self.register_buffer('running_var', torch.ones(S, d))
    # Star-topology FCN, in the x @ W layout of the paper's code: shared W, b; per scenario W_s
    # (ones) and b_s (zeros), so STAR starts as the shared network.
    dims = [d, *hidden, 1]
    self.shared_w = nn.ParameterList(
        nn.Parameter(tm._lecun_normal_(torch.empty(a, b), a)) for a, b in zip(dims, dims[1:]))
    self.shared_b = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in dims[1:])
    self.slot_w = nn.ModuleList(nn.ParameterList(nn.Parameter(torch.ones(a, b))
                                                 for a, b in zip(dims, dims[1:]))
                                for _ in range(S))
    self.slot_b = nn.ModuleList(nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in dims[1:])
                                for _ in range(S))
    self.scenario_embed = nn.Embedding(S, scenario_embed_dim)
    nn.init.normal_(self.scenario_embed.weight, 0.0, 0.05)
    self.aux = nn.Sequential(*mlp(scenario_embed_dim, aux_hidden, act),
                             linear(([scenario_embed_dim, *aux_hidden])[-1], 1))

  def _moments(self, x, scenario):
    """Per scenario (mean, var) of its rows (training, updating the running ones) or running."""
    if not self.training:
      return [(self.running_mean[s], self.running_var[s]) for s in range(self.num_scenarios)]
    moments = []
    for s in range(self.num_scenarios):
      m = (scenario == s).to(x.dtype)[:, None]  # (B, 1)
      n = m.sum()
      mean = (x * m).sum(0) / n.clamp_min(1)
      var = ((x - mean).square() * m).sum(0) / n.clamp_min(1)  # biased, as the JAX model
      with torch.no_grad():  # a scenario absent from the batch keeps its running statistics
        k = self.momentum
        self.running_mean[s] = torch.where(n > 0, k * self.running_mean[s] + (1 - k) * mean,
                                           self.running_mean[s])
        self.running_var[s] = torch.where(n > 0, k * self.running_var[s] + (1 - k) * var,
                                          self.running_var[s])
      moments.append((mean, var))
    return moments

  def forward(self, batch):
    x, _ = self.features(batch)
    scenario = batch['scenario'].long()
    moments = self._moments(x, scenario)

    def domain_network(s, h):  # scenario s's rows: normalise, then its star FCN
      mean, var = moments[s]
      h = (h - mean) * torch.rsqrt(var + self.eps) * (self.pn_scale * self.pn_scenario_scale[s]) \
          + (self.pn_bias + self.pn_scenario_bias[s])
      for l, (w, b) in enumerate(zip(self.shared_w, self.shared_b)):
        h = h @ (self.slot_w[s][l] * w) + (self.slot_b[s][l] + b)
        if l < len(self.shared_w) - 1:
          h = self.act(h)
      return h

    main = per_scenario(domain_network, scenario, self.num_scenarios, self.loop, x)
    aux = self.aux(self.scenario_embed(scenario))
    return {'logits': (main + aux)[:, 0]}

  def flax_bindings(self):
    S, L = self.num_scenarios, len(self.shared_w)
    out = {('partitioned_norm', 'scale'): Bind([self.pn_scale]),
           ('partitioned_norm', 'bias'): Bind([self.pn_bias]),
           ('partitioned_norm', 'scenario_scale'): Bind(list(self.pn_scenario_scale), lead=(S,)),
           ('partitioned_norm', 'scenario_bias'): Bind(list(self.pn_scenario_bias), lead=(S,)),
           ('scenario_embed', 'table', 'embedding'): Bind([self.scenario_embed.weight])}
    for l in range(L):
      name = 'star_output' if l == L - 1 else f'star_{l}'
      out[(name, 'kernel')] = Bind([self.shared_w[l]])
      out[(name, 'bias')] = Bind([self.shared_b[l]])
      out[(name, 'scenario_kernel')] = Bind([self.slot_w[s][l] for s in range(S)], lead=(S,))
      out[(name, 'scenario_bias')] = Bind([self.slot_b[s][l] for s in range(S)], lead=(S,))
    aux_linears = [m for m in self.aux if isinstance(m, nn.Linear)]
    for i, layer in enumerate(aux_linears[:-1]):
      out.update(bind_linear(('aux', f'dense_{i}'), layer))
    out.update(bind_linear(('aux_output',), aux_linears[-1]))
    return out

  def flax_state(self):
    return {('batch_stats', 'partitioned_norm', 'mean'): self.running_mean,
            ('batch_stats', 'partitioned_norm', 'var'): self.running_var}

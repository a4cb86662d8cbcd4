"""PyTorch references of the zoo's STAR, MMoE and PLE, for parity tests and benchmarks only.

Written the way PyTorch multi-scenario code is written (Scenario-Wise-Rec, MMLRec): one
`nn.Linear` / parameter per scenario (and per expert) in `ModuleList`s, and a Python loop over the
scenarios that picks each scenario's rows with a boolean mask. The loop has two forms
(`scenario_loop`), both common in those libraries:
* 'subset': out[mask] = f_s(x[mask]); every row goes through its own scenario's layers only (the
  FLOPs of one network; mask sizes change per batch, so torch.compile graph-breaks there);
* 'masked': out = where(mask, f_s(x), out); every row goes through every scenario's layers and
  keeps its own (S x the per-scenario FLOPs, static shapes: what torch.compile takes whole).

They compute what `midpg_jax/models/star.py` (STAR, train-mode partitioned normalisation with
running per-scenario statistics included) and `midpg_jax/models/moe.py` (MMoE, PLE) compute,
with Flax's initialisation ranges. `load_jax_params` copies a Flax params tree (and STAR's
`batch_stats`) in; `grads_as_jax_tree` / `params_as_jax_tree` / `state_as_jax_tree` read the torch
side back in the Flax trees' structure: each Flax leaf is bound (`Bind`) to the torch parameters
that hold it, per-scenario / per-expert lists stacked on leading axes and `nn.Linear` weights
(d_out, d_in) transposed to Flax kernels (d_in, d_out). Dropout is not implemented.
Not part of the `midpg_jax` package; nothing there imports torch.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from reference import torch_midpg as tm
from reference.torch_midpg import FeatureEmbedding, _flatten, _unflatten

MODELS = ('star', 'mmoe', 'ple')
SCENARIO_LOOPS = ('subset', 'masked')
_ACT_MODULES = {'relu': nn.ReLU, 'gelu': lambda: nn.GELU(approximate='tanh'), 'tanh': nn.Tanh,
                'silu': nn.SiLU}  # flax nn.gelu is the tanh approximation


def linear(d_in: int, d_out: int) -> nn.Linear:
  """nn.Linear initialised as flax's Dense: LeCun normal (truncated at 2 sd) weight, zero bias."""
  layer = nn.Linear(d_in, d_out)
  tm._lecun_normal_(layer.weight.data, d_in)
  nn.init.zeros_(layer.bias)
  return layer


def mlp(d_in: int, widths: Sequence[int], act: str) -> list[nn.Module]:
  layers, dims = [], [d_in, *widths]
  for a, b in zip(dims[:-1], dims[1:]):
    layers += [linear(a, b), _ACT_MODULES[act]()]
  return layers


def per_scenario(fn, scenario: torch.Tensor, num_scenarios: int, loop: str, *inputs):
  """fn(s, *rows of inputs) for every scenario s, as one (B, ...) result in batch order."""
  out = None
  for s in range(num_scenarios):
    mask = scenario == s
    if loop == 'subset':
      y = fn(s, *(t[mask] for t in inputs))
      if out is None:
        out = y.new_zeros((scenario.shape[0], *y.shape[1:]))
      out[mask] = y
    elif loop == 'masked':
      y = fn(s, *inputs)
      out = y if out is None else torch.where(mask.view(-1, *[1] * (y.dim() - 1)), y, out)
    else:
      raise ValueError(f'unknown scenario_loop {loop!r}; choose one of {SCENARIO_LOOPS}')
  return out


# ---- Flax <-> torch bindings ---------------------------------------------------------------

class Bind(NamedTuple):
  """The torch tensors holding one Flax leaf: stack(params).reshape(lead + shape), transposed."""
  params: list
  transpose: bool = False  # nn.Linear weight (d_out, d_in) <-> Flax kernel (d_in, d_out)
  lead: tuple = ()  # leading (stacked) axes, e.g. (S,) or (S, experts); params in row-major order

  def to_flax(self, tensors) -> np.ndarray:
    # .copy(): a numpy view would follow the live tensor through later in-place updates
    arrays = [(t.T if self.transpose else t).detach().cpu().numpy().copy() for t in tensors]
    return np.stack(arrays).reshape(*self.lead, *arrays[0].shape) if self.lead else arrays[0]

  def load(self, value: np.ndarray) -> None:
    value = np.asarray(value, np.float32)
    parts = value.reshape(-1, *value.shape[len(self.lead):]) if self.lead else [value]
    for p, v in zip(self.params, parts, strict=True):
      t = torch.from_numpy(np.ascontiguousarray(v.T if self.transpose else v))
      if t.shape != p.shape:
        raise ValueError(f'flax {tuple(t.shape)} vs torch {tuple(p.shape)}')
      p.copy_(t)


def bind_linear(path: tuple, layers, lead: tuple = ()) -> dict:
  """A flax Dense / stacked-kernel pair: path/kernel and path/bias from nn.Linear(s)."""
  layers = list(layers) if lead else [layers]
  return {(*path, 'kernel'): Bind([l.weight for l in layers], True, lead),
          (*path, 'bias'): Bind([l.bias for l in layers], False, lead)}


def bindings(model: nn.Module) -> dict[tuple, Bind]:
  out = {('features', name): Bind([p]) for name, p in model.features.tables.items()}
  out.update(model.flax_bindings())
  return out


def load_jax_params(model: nn.Module, params, model_state=None) -> None:
  """Copies a Flax params tree (and `model_state`, e.g. {'batch_stats': ...}) in, in place."""
  targets = {('params', *k): v for k, v in bindings(model).items()}
  targets.update({k: Bind([b]) for k, b in model.flax_state().items()})
  flat = {('params', *k): v for k, v in _flatten(params).items()}
  flat.update(_flatten(dict(model_state or {})))
  if not model_state:  # params only: the state keeps its values
    targets = {k: v for k, v in targets.items() if k[0] == 'params'}
  if set(flat) != set(targets):
    raise ValueError(f'trees differ: only in flax {sorted(set(flat) - set(targets))}, '
                     f'only in torch {sorted(set(targets) - set(flat))}')
  with torch.no_grad():
    for path, bind in targets.items():
      try:
        bind.load(flat[path])
      except ValueError as e:
        raise ValueError(f'{"/".join(path)}: {e}') from None


def params_as_jax_tree(model: nn.Module) -> dict:
  return _unflatten({k: b.to_flax(b.params) for k, b in bindings(model).items()})


def grads_as_jax_tree(model: nn.Module) -> dict:
  """`.grad` in the Flax params tree structure (None -> zeros)."""
  return _unflatten({k: b.to_flax([p.grad if p.grad is not None else torch.zeros_like(p)
                                   for p in b.params]) for k, b in bindings(model).items()})


def state_as_jax_tree(model: nn.Module) -> dict:
  return _unflatten({k: b.detach().cpu().numpy().copy() for k, b in model.flax_state().items()})


def split_hidden(hidden):  # = midpg_jax.models.scenario_ops.split_hidden (towers get the top)
  hidden = tuple(hidden)
  return (hidden[:-1], hidden[-1:]) if len(hidden) > 1 else (hidden, ())


# ---- models --------------------------------------------------------------------------------

class TorchSTAR(nn.Module):
  """STAR: partitioned normalisation, star-topology FCN (W_s * W, b_s + b), auxiliary network."""

  def __init__(self, spec, hidden=(256, 128, 64), embed_dim=16, act='relu', scenario_embed_dim=16,
               aux_hidden=(32,), pn_momentum=0.9, scenario_loop='subset', eps=1e-5):
    super().__init__()
    S = self.num_scenarios = spec.num_scenarios
    self.loop, self.momentum, self.eps = scenario_loop, pn_momentum, eps
    self.act = _ACT_MODULES[act]()
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


def _towers(S, d_in, top, act):
  """One tower per scenario: the top hidden widths, then the output layer (1 logit)."""
  return nn.ModuleList(nn.Sequential(*mlp(d_in, top, act), linear(([d_in, *top])[-1], 1))
                       for _ in range(S))


def _bind_towers(towers, S):
  out = {}
  per_scenario_linears = [[m for m in t if isinstance(m, nn.Linear)] for t in towers]
  for i in range(len(per_scenario_linears[0]) - 1):
    out.update(bind_linear(('tower', f'dense_{i}'), [ls[i] for ls in per_scenario_linears], (S,)))
  out.update(bind_linear(('output',), [ls[-1] for ls in per_scenario_linears], (S,)))
  return out


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
    self.towers = _towers(S, bottom[-1], top, act)

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
    out.update(_bind_towers(self.towers, S))
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
    self.act = _ACT_MODULES[act]()

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
    self.towers = _towers(S, levels[-1], top, act)

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
    out.update(_bind_towers(self.towers, S))
    return out

  def flax_state(self):
    return {}


def build_torch_zoo_model(model_cfg, spec, scenario_loop: str = 'subset') -> nn.Module:
  """The torch twin of `midpg_jax.models.build_model(model_cfg, spec)` for star, mmoe, ple."""
  if float(model_cfg.get('dropout', 0.0)) > 0:
    raise ValueError('the torch zoo reference implements dropout = 0 only')
  if scenario_loop not in SCENARIO_LOOPS:
    raise ValueError(f'unknown scenario_loop {scenario_loop!r}; choose one of {SCENARIO_LOOPS}')
  common = dict(hidden=tuple(int(w) for w in model_cfg.hidden),
                embed_dim=int(model_cfg.embed_dim), act=model_cfg.activation,
                scenario_loop=scenario_loop)
  name = model_cfg.name
  if name == 'star':
    return TorchSTAR(spec, scenario_embed_dim=int(model_cfg.scenario_embed_dim),
                     aux_hidden=tuple(int(w) for w in model_cfg.star_aux_hidden),
                     pn_momentum=float(model_cfg.pn_momentum), **common)
  if name == 'mmoe':
    return TorchMMoE(spec, num_experts=int(model_cfg.num_experts), **common)
  if name == 'ple':
    return TorchPLE(spec, num_experts=int(model_cfg.num_experts),
                    specific_experts=int(model_cfg.specific_experts), **common)
  raise ValueError(f'the torch zoo reference has {MODELS}, not {name!r}')

"""PyTorch references of the zoo's STAR, MMoE, PLE and per-scenario-tower Shared-Bottom, for
parity tests and benchmarks only.

Written the way PyTorch multi-scenario code is written (Scenario-Wise-Rec, MMLRec): one
`nn.Linear` / parameter per scenario (and per expert) in `ModuleList`s, and a Python loop over the
scenarios that picks each scenario's rows with a boolean mask. The loop has two forms
(`scenario_loop`), both common in those libraries:
* 'subset': out[mask] = f_s(x[mask]); every row goes through its own scenario's layers only (the
  FLOPs of one network; mask sizes change per batch, so torch.compile graph-breaks there);
* 'masked': out = where(mask, f_s(x), out); every row goes through every scenario's layers and
  keeps its own (S x the per-scenario FLOPs, static shapes: what torch.compile takes whole).

The models (reference/torch_star.py: STAR, train-mode partitioned normalisation with its running
per-scenario statistics included; reference/torch_moe.py: MMoE, PLE; here: Shared-Bottom with one
tower per scenario) compute what the JAX ones of `midpg_jax/models/` compute, with Flax's
initialisation ranges. This module holds what they share: `build_torch_zoo_model`, the scenario
loop `per_scenario`, and the Flax <-> torch parameter mapping: `load_jax_params` copies a Flax
params tree (and STAR's `batch_stats`) in; `grads_as_jax_tree` / `params_as_jax_tree` / `state_as_jax_tree` read the torch
side back in the Flax trees' structure: each Flax leaf is bound (`Bind`) to the torch parameters
that hold it, per-scenario / per-expert lists stacked on leading axes and `nn.Linear` weights
(d_out, d_in) transposed to Flax kernels (d_in, d_out). Dropout is not implemented.
Not part of the `midpg_jax` package; nothing there imports torch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from reference import torch_midpg as tm
from reference.torch_midpg import FeatureEmbedding, _flatten, _unflatten

MODELS = ('star', 'mmoe', 'ple', 'shared_bottom')
SCENARIO_LOOPS = ('subset', 'masked')
ACT_MODULES = {'relu': nn.ReLU, 'gelu': lambda: nn.GELU(approximate='tanh'), 'tanh': nn.Tanh,
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
    layers += [linear(a, b), ACT_MODULES[act]()]
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
      # A copy: JAX's host arrays are read-only, and torch warns on non-writable arrays.
      t = torch.from_numpy(np.array(v.T if self.transpose else v, order='C', copy=True))
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


# ---- per-scenario towers, and Shared-Bottom ------------------------------------------------

def scenario_towers(S, d_in, top, act):
  """One tower per scenario: the top hidden widths, then the output layer (1 logit)."""
  return nn.ModuleList(nn.Sequential(*mlp(d_in, top, act), linear(([d_in, *top])[-1], 1))
                       for _ in range(S))


def bind_towers(towers, S, tower='tower', output='output'):
  out = {}
  per_scenario_linears = [[m for m in t if isinstance(m, nn.Linear)] for t in towers]
  for i in range(len(per_scenario_linears[0]) - 1):
    out.update(bind_linear((tower, f'dense_{i}'), [ls[i] for ls in per_scenario_linears], (S,)))
  out.update(bind_linear((output,), [ls[-1] for ls in per_scenario_linears], (S,)))
  return out


class TorchSharedBottom(nn.Module):
  """Shared-Bottom with one tower per scenario: a shared bottom MLP (all hidden widths but the
  last), then the row's own scenario's tower (the last width and the output layer)."""

  def __init__(self, spec, hidden=(256, 128, 64), embed_dim=16, act='relu',
               scenario_loop='subset'):
    super().__init__()
    S = self.num_scenarios = spec.num_scenarios
    self.loop = scenario_loop
    self.features = FeatureEmbedding(spec, embed_dim)
    bottom, top = split_hidden(hidden)
    self.bottom = nn.Sequential(*mlp(self.features.out_dim, bottom, act))
    self.towers = scenario_towers(S, bottom[-1], top, act)

  def forward(self, batch):
    x, _ = self.features(batch)
    logits = per_scenario(lambda s, h: self.towers[s](h), batch['scenario'].long(),
                          self.num_scenarios, self.loop, self.bottom(x))
    return {'logits': logits[:, 0]}

  def flax_bindings(self):
    out = {}
    for i, layer in enumerate(m for m in self.bottom if isinstance(m, nn.Linear)):
      out.update(bind_linear(('bottom', f'dense_{i}'), layer))
    out.update(bind_towers(self.towers, self.num_scenarios, 'towers', 'tower_output'))
    return out

  def flax_state(self):
    return {}


def build_torch_zoo_model(model_cfg, spec, scenario_loop: str = 'subset') -> nn.Module:
  """The torch twin of `midpg_jax.models.build_model(model_cfg, spec)` for `MODELS`.

  'shared_bottom' is the per-scenario-tower Shared-Bottom (bottom / towers / tower_output), not
  the scenario-blind backbone of reference/torch_midpg.py.
  """
  if float(model_cfg.get('dropout', 0.0)) > 0:
    raise ValueError('the torch zoo reference implements dropout = 0 only')
  if scenario_loop not in SCENARIO_LOOPS:
    raise ValueError(f'unknown scenario_loop {scenario_loop!r}; choose one of {SCENARIO_LOOPS}')
  common = dict(hidden=tuple(int(w) for w in model_cfg.hidden),
                embed_dim=int(model_cfg.embed_dim), act=model_cfg.activation,
                scenario_loop=scenario_loop)
  from reference.torch_moe import TorchMMoE, TorchPLE  # they import this module's helpers
  from reference.torch_star import TorchSTAR
  name = model_cfg.name
  if name == 'star':
    return TorchSTAR(spec, scenario_embed_dim=int(model_cfg.scenario_embed_dim),
                     aux_hidden=tuple(int(w) for w in model_cfg.star.aux_hidden),
                     pn_momentum=float(model_cfg.star.pn_momentum), **common)
  if name == 'mmoe':
    return TorchMMoE(spec, num_experts=int(model_cfg.mmoe.num_experts), **common)
  if name == 'shared_bottom':
    return TorchSharedBottom(spec, **common)
  if name == 'ple':
    return TorchPLE(spec, num_experts=int(model_cfg.ple.num_experts),
                    specific_experts=int(model_cfg.ple.specific_experts), **common)
  raise ValueError(f'the torch zoo reference has {MODELS}, not {name!r}')

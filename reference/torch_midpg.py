"""A PyTorch reference of MI-DPG (and its plain backbone), for parity tests and benchmarks only.

Mirrors `midpg_jax/models/midpg.py`, `midpg_jax/models/mlp.py` (`Mlp`),
`midpg_jax/mi.py` and `midpg_jax/objective.py` layer for layer, with the same initialisation
ranges (embeddings normal(0.05), kernels LeCun-normal truncated at 2 sigma, low-rank input
factors normal(1/sqrt(rank)), Q = B = 0 so M = 0 at the start, zero biases; for 'replace' the
variance-preserving factors of midpg.py), the same fixed MI sketch and parameters in the
same layout (`x @ kernel`, kernel (d_in, d_out)), so `load_jax_params` copies a Flax tree in
without transposes and `grads_as_jax_tree` returns gradients in the Flax tree's structure.

Not part of the `midpg_jax` package; nothing there imports torch. Dropout is not implemented
(the parity tests and benchmarks run at the default `model.dropout = 0`).

Scenario matmul (how each row gets its own scenario's weight (S, d_in, d_out)):
* 'segment': sort rows by scenario once, split into S contiguous segments, one matmul each,
  unsort the logits at the end (the segment sizes are read on the host: eager only);
* 'masked':  every row times every scenario's weight, keep its own (S x the FLOPs, no host
  sync, static shapes: what `torch.compile` handles without graph breaks).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ESTIMATORS = ('infonce', 'jsd', 'mine', 'none')
SCENARIO_MATMULS = ('segment', 'masked')
_ACTS = {'relu': F.relu, 'gelu': lambda x: F.gelu(x, approximate='tanh'), 'tanh': torch.tanh,
         'silu': F.silu}  # flax nn.gelu is the tanh approximation by default


# ---- initialisers matching flax.linen's ----------------------------------------------------

def _lecun_normal_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
  # jax.nn.initializers.lecun_normal: truncated normal in [-2, 2] sd, rescaled to variance 1/fan_in
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  with torch.no_grad():
    return nn.init.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0).mul_(std)


def _param(*shape, init: str, fan_in: int | None = None, std: float = 0.0) -> nn.Parameter:
  t = torch.empty(*shape)
  if init == 'zeros':
    t.zero_()
  elif init == 'normal':
    with torch.no_grad():
      t.normal_(0.0, std)
  elif init == 'lecun':
    _lecun_normal_(t, fan_in if fan_in is not None else shape[-2])
  else:
    raise ValueError(init)
  return nn.Parameter(t)


class Dense(nn.Module):
  """flax.linen.Dense: y = x @ kernel + bias, kernel (d_in, d_out) LeCun normal, bias 0."""

  def __init__(self, d_in: int, d_out: int):
    super().__init__()
    self.kernel = _param(d_in, d_out, init='lecun')
    self.bias = _param(d_out, init='zeros')

  def forward(self, x):
    return torch.addmm(self.bias, x, self.kernel) if x.dim() == 2 else x @ self.kernel + self.bias


class MLP(nn.Module):
  def __init__(self, d_in: int, widths: Sequence[int], act: str = 'relu'):
    super().__init__()
    dims = [d_in, *widths]
    self.layers = nn.ModuleList(Dense(a, b) for a, b in zip(dims[:-1], dims[1:]))
    self.act = _ACTS[act]

  def forward(self, x):
    for layer in self.layers:
      x = self.act(layer(x))
    return x


class FeatureEmbedding(nn.Module):
  """Per-field tables `embed_<field>` (normal 0.05); multi-valued fields mean-pooled; + dense."""

  def __init__(self, spec, embed_dim: int, sparse_min_rows: int = 0):
    super().__init__()
    self.spec = spec
    # Tables with at least `sparse_min_rows` rows (0 = none) get sparse gradients (for
    # torch.optim.SparseAdam, the LazyAdam that midpg_jax.sparse_optim implements).
    self.sparse_min_rows = sparse_min_rows
    self.tables = nn.ParameterDict()
    for name, vocab in zip((*spec.cat_names, *spec.multi_names),
                           (*spec.cat_vocab_sizes, *spec.multi_vocab_sizes)):
      self.tables['embed_' + name] = _param(vocab, embed_dim, init='normal', std=0.05)
    self.out_dim = (len(spec.cat_names) + len(spec.multi_names)) * embed_dim + spec.num_dense

  def is_sparse(self, name: str) -> bool:
    return bool(self.sparse_min_rows) and self.tables[name].shape[0] >= self.sparse_min_rows

  def _lookup(self, ids, name):
    return F.embedding(ids, self.tables[name], sparse=self.is_sparse(name))

  def forward(self, batch):
    fields = {}
    cat = batch['cat']
    for j, name in enumerate(self.spec.cat_names):
      fields[name] = self._lookup(cat[:, j], 'embed_' + name)
    for name in self.spec.multi_names:
      ids = batch['multi'][name]
      mask = (ids > 0).to(torch.float32)[..., None]
      summed = (self._lookup(ids, 'embed_' + name) * mask).sum(1)
      fields[name] = summed / mask.sum(1).clamp_min(1.0)
    parts = [fields[n] for n in (*self.spec.cat_names, *self.spec.multi_names)]
    if self.spec.num_dense:
      parts.append(batch['dense'].to(torch.float32))
    return torch.cat(parts, dim=-1), fields


class ModulatedDense(nn.Module):
  """W_s = W * (1 + P C_s Q + A_s B_s) ('modulate') or W_s = M_s ('replace')."""

  def __init__(self, d_in, d_out, num_scenarios, rank, specific_rank, use_shared=True,
               use_specific=True, combine='modulate'):
    super().__init__()
    self.use_shared, self.use_specific, self.combine = use_shared, use_specific, combine
    modulate = combine == 'modulate'
    factor_std = 1.0 / math.sqrt(max(rank, 1))
    if modulate:
      self.kernel = _param(d_in, d_out, init='lecun')
    self.bias = _param(d_out, init='zeros')
    # 'modulate': Q = B = 0 so M = 0; 'replace': variance-preserving M (P, A of fan-in d_in, Q, B
    # of fan-in rank, each part with half the variance when both are on), as midpg.py.
    parts = int(use_shared) + int(use_specific)
    if use_shared:
      self.shared_in = (_param(d_in, rank, init='normal', std=factor_std) if modulate
                        else _param(d_in, rank, init='lecun'))
      self.shared_out = (_param(rank, d_out, init='zeros') if modulate
                         else _param(rank, d_out, init='lecun', fan_in=rank * parts))
    if use_specific:
      self.specific_in = (_param(num_scenarios, d_in, specific_rank, init='normal',
                                 std=factor_std) if modulate
                          else _param(num_scenarios, d_in, specific_rank, init='lecun'))
      self.specific_out = (_param(num_scenarios, specific_rank, d_out, init='zeros') if modulate
                           else _param(num_scenarios, specific_rank, d_out, init='lecun',
                                       fan_in=specific_rank * parts))

  def sketch(self, core, core_scenario, sketch_u, sketch_v):
    """(N, K): u_k^T M(n) v_k from the factors (midpg.ModulatedDense.summary)."""
    out = torch.zeros(core.shape[0], sketch_u.shape[0], dtype=core.dtype)
    if self.use_shared:
      up, qv = sketch_u @ self.shared_in, self.shared_out @ sketch_v.T
      out = out + torch.einsum('ka,nac,ck->nk', up, core, qv)
    if self.use_specific:
      ua = torch.einsum('ki,sir->skr', sketch_u, self.specific_in)
      bv = torch.einsum('srd,kd->srk', self.specific_out, sketch_v)
      out = out + torch.einsum('skr,srk->sk', ua, bv)[core_scenario]
    return out

  def scenario_weights(self, core):
    """(S, d_in, d_out) from cores (S, r, r)."""
    m = 0.0
    if self.use_shared:
      pc = torch.einsum('ia,sac->sic', self.shared_in, core)
      m = m + pc @ self.shared_out
    if self.use_specific:
      m = m + torch.bmm(self.specific_in, self.specific_out)
    if self.combine == 'modulate':
      return self.kernel * (1.0 + m)
    return m

  def forward(self, h, rows, core, path, counts=None):
    if path == 'instance':
      return self._decomposed(h, rows, core) + self.bias
    w = self.scenario_weights(core)
    if path == 'segment':  # h sorted by scenario; counts: python ints
      out = torch.cat([seg @ w[s] for s, seg in enumerate(torch.split(h, counts))], 0)
    elif path == 'masked':
      out = torch.zeros(h.shape[0], w.shape[-1], dtype=h.dtype, device=h.device)
      for s in range(w.shape[0]):
        out = torch.where((rows == s)[:, None], h @ w[s], out)
    else:
      raise ValueError(f'unknown path {path!r}')
    return out + self.bias

  def _decomposed(self, h, scenario, core):
    modulate = self.combine == 'modulate'
    out = h @ self.kernel if modulate else 0.0
    if self.use_shared:
      if modulate:
        t = torch.einsum('bi,ia->bai', h, self.shared_in) @ self.kernel
        v = torch.einsum('bad,bac->bcd', t, core)
        out = out + torch.einsum('bcd,cd->bd', v, self.shared_out)
      else:
        out = out + torch.einsum('ba,bac->bc', h @ self.shared_in, core) @ self.shared_out
    if self.use_specific:
      a, b = self.specific_in[scenario], self.specific_out[scenario]
      if modulate:
        t = torch.einsum('bi,bik->bki', h, a) @ self.kernel
        out = out + torch.einsum('bkd,bkd->bd', t, b)
      else:
        out = out + torch.einsum('bk,bkd->bd', torch.einsum('bi,bik->bk', h, a), b)
    return out


class WeightGenerator(nn.Module):
  def __init__(self, d_z, num_layers, rank, hidden=(64,), act='relu'):
    super().__init__()
    self.num_layers, self.rank = num_layers, rank
    self.mlp = MLP(d_z, hidden, act)
    self.out = Dense(([d_z, *hidden])[-1], num_layers * rank * rank)

  def forward(self, z):
    g = self.out(self.mlp(z)).reshape(z.shape[0], self.num_layers, self.rank, self.rank)
    return torch.eye(self.rank, dtype=g.dtype, device=g.device) + g


# ---- MI bounds and objective (midpg_jax/mi.py, midpg_jax/objective.py) ----------------------

def infonce(scores, scenario, present):
  masked = scores.masked_fill(~present[None, :], -math.inf)
  log_probs = torch.log_softmax(masked, dim=-1)
  true = log_probs.gather(1, scenario[:, None])[:, 0]
  return torch.log(present.sum().to(scores.dtype)) + true.mean()


def _neg_mask(scenario, present, num_scenarios):
  onehot = F.one_hot(scenario, num_scenarios).bool()
  return (~onehot) & present[None, :], onehot


def jsd(scores, scenario, present):
  neg, pos = _neg_mask(scenario, present, scores.shape[1])
  pos_term = torch.where(pos, -F.softplus(-scores), 0.0).sum() / scores.shape[0]
  neg_term = torch.where(neg, F.softplus(scores), 0.0).sum() / neg.sum().clamp_min(1)
  return pos_term - neg_term


def mine(scores, scenario, present):
  neg, pos = _neg_mask(scenario, present, scores.shape[1])
  pos_term = torch.where(pos, scores, 0.0).sum() / scores.shape[0]
  neg_count = neg.sum()
  lme = (torch.logsumexp(torch.where(neg, scores, -math.inf).reshape(-1), 0)
         - torch.log(neg_count.clamp_min(1).to(scores.dtype)))
  return torch.where(neg_count > 0, pos_term - lme, torch.zeros((), dtype=scores.dtype))


def mi_lower_bound(name, scores, scenario, present):
  if name == 'infonce':
    return infonce(scores, scenario, present)
  if name == 'jsd':
    return jsd(scores, scenario, present)
  if name == 'mine':
    return mine(scores, scenario, present)
  if name == 'none':
    return torch.zeros((), dtype=scores.dtype)
  raise ValueError(f'unknown MI estimator {name!r}; choose one of {ESTIMATORS}')


def loss_fn(outputs: dict, batch: dict, mi_weight: float):
  """BCE (weighted mean) + lambda * (-MI bound); returns (total, parts)."""
  logits, weight = outputs['logits'], batch['weight']
  per_example = F.binary_cross_entropy_with_logits(logits, batch['label'].to(logits.dtype),
                                                   reduction='none')
  bce = (per_example * weight).sum() / weight.sum().clamp_min(1.0)
  parts = {'bce': bce}
  total = bce
  if 'mi_bound' in outputs:
    parts['mi_bound'] = outputs['mi_bound']
    total = total - mi_weight * outputs['mi_bound']
  return total, parts


SKETCH_SEED, SKETCH_FLOOR = 20230926, 1e-2  # as midpg_jax/mi.py


def fixed_sketch(layer, kind, shape):
  rng = np.random.default_rng([SKETCH_SEED, layer, kind])
  return torch.from_numpy((rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32))


def critic_scores(queries, prototypes, temperature):
  total = 0.0
  for q, m in zip(queries, prototypes):
    q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-12)
    m = m * torch.rsqrt((m * m).sum(-1, keepdim=True) + SKETCH_FLOOR ** 2 * m.shape[-1])
    total = total + q @ m.T
  return total / (len(queries) * temperature)


# ---- models ---------------------------------------------------------------------------------

class TorchMIDPG(nn.Module):
  def __init__(self, spec, hidden=(256, 128, 64), embed_dim=16, scenario_embed_dim=16, rank=4,
               specific_rank=4, generator_hidden=(64,), generator_features=(), use_shared=True,
               use_specific=True, combine='modulate', mi_estimator='infonce', mi_dim=16,
               mi_temperature=0.5, act='relu', scenario_matmul='segment', sparse_min_rows=0):
    super().__init__()
    if scenario_matmul not in SCENARIO_MATMULS:
      raise ValueError(f'unknown scenario_matmul {scenario_matmul!r}; '
                       f'choose one of {SCENARIO_MATMULS}')
    self.spec, self.hidden = spec, tuple(hidden)
    self.num_scenarios = spec.num_scenarios
    self.generator_features = tuple(generator_features)
    self.mi_estimator, self.mi_temperature = mi_estimator, mi_temperature
    self.scenario_matmul, self.act = scenario_matmul, _ACTS[act]
    S = spec.num_scenarios
    self.features = FeatureEmbedding(spec, embed_dim, sparse_min_rows)
    self.scenario_embed = _param(S, scenario_embed_dim, init='normal', std=0.05)
    d_z = scenario_embed_dim + embed_dim * len(self.generator_features)
    self.generator = WeightGenerator(d_z, len(hidden), rank, tuple(generator_hidden), act)
    dims = [self.features.out_dim, *hidden]
    # Fixed (not trained) sketch vectors of the MI critic, per layer: u (K, d_in), v (K, d_out)
    # and the projection of z (K, d_z).
    self.sketches = [(fixed_sketch(l, 0, (mi_dim, a)), fixed_sketch(l, 1, (mi_dim, b)),
                      fixed_sketch(l, 2, (mi_dim, d_z)))
                     for l, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]
    self.layers = nn.ModuleList(
        ModulatedDense(a, b, S, rank, specific_rank, use_shared, use_specific, combine)
        for a, b in zip(dims[:-1], dims[1:]))
    self.output = Dense(dims[-1], 1)

  def mi_bound(self, z, cores, scenario, counts):
    """The MI term's lower bound from the generated cores (its own method, so a torch.compile
    caller can keep it out of the compiled graph: `scripts/torch_compile_repro.py`)."""
    S = self.num_scenarios
    instance = bool(self.generator_features)
    core_scenario = scenario if instance else torch.arange(S)
    queries = [z @ r.T for _, _, r in self.sketches]
    protos = [layer.sketch(cores[:, l], core_scenario, u, v)
              for l, (layer, (u, v, _)) in enumerate(zip(self.layers, self.sketches))]
    if instance:
      present = counts > 0
      protos = [torch.zeros(S, m.shape[1], dtype=m.dtype).index_add(0, scenario, m)
                / counts.clamp_min(1)[:, None].to(m.dtype) for m in protos]
      scores = critic_scores(queries, protos, self.mi_temperature)
    else:
      present = torch.ones(S, dtype=torch.bool)
      scores = critic_scores(queries, protos, self.mi_temperature)[scenario]
    return mi_lower_bound(self.mi_estimator, scores, scenario, present)

  def forward(self, batch):
    S = self.num_scenarios
    x, fields = self.features(batch)
    scenario = batch['scenario'].long()
    counts = torch.bincount(scenario, minlength=S)
    instance = bool(self.generator_features)
    if instance:
      z = torch.cat([self.scenario_embed[scenario]] + [fields[f] for f in self.generator_features],
                    -1)
      cores = self.generator(z)  # (B, L, r, r)
      path = 'instance'
    else:
      z = self.scenario_embed  # (S, d_z)
      cores = self.generator(z)  # (S, L, r, r)
      path = self.scenario_matmul
    outputs = {}
    if self.mi_estimator != 'none':
      outputs['mi_bound'] = self.mi_bound(z, cores, scenario, counts)
    h, rows, seg = x, scenario, None
    if path == 'segment':
      order = torch.argsort(scenario, stable=True)
      h, rows, seg = x[order], scenario[order], counts.tolist()
    for l, layer in enumerate(self.layers):
      h = self.act(layer(h, rows, cores[:, l], path, seg))
    logits = self.output(h)[:, 0]
    if path == 'segment':
      logits = torch.empty_like(logits).index_copy(0, order, logits)
    outputs['logits'] = logits
    return outputs


class TorchMLP(nn.Module):
  """midpg_jax.models.mlp.Mlp: embeddings -> MLP -> 1 logit, scenario ignored."""

  def __init__(self, spec, hidden=(256, 128, 64), embed_dim=16, act='relu', sparse_min_rows=0):
    super().__init__()
    self.features = FeatureEmbedding(spec, embed_dim, sparse_min_rows)
    self.mlp = MLP(self.features.out_dim, hidden, act)
    self.output = Dense(([self.features.out_dim, *hidden])[-1], 1)

  def forward(self, batch):
    x, _ = self.features(batch)
    return {'logits': self.output(self.mlp(x))[:, 0]}


def build_torch_model(model_cfg, spec, scenario_matmul: str = 'segment',
                      sparse_min_rows: int = 0) -> nn.Module:
  """The torch twin of `midpg_jax.models.build_model(model_cfg, spec)` ('midpg', 'mlp').

  sparse_min_rows > 0: tables with that many rows get sparse gradients (see `make_adam`).
  """
  if float(model_cfg.get('dropout', 0.0)) > 0:
    raise ValueError('the torch reference implements dropout = 0 only')
  common = dict(hidden=tuple(int(w) for w in model_cfg.hidden), embed_dim=int(model_cfg.embed_dim),
                act=model_cfg.activation, sparse_min_rows=int(sparse_min_rows))
  if model_cfg.name == 'mlp':
    return TorchMLP(spec, **common)
  if model_cfg.name != 'midpg':
    raise ValueError(f'the torch reference has midpg and mlp, not {model_cfg.name!r}')
  b = model_cfg.midpg  # MI-DPG's own config block
  return TorchMIDPG(spec, scenario_embed_dim=int(model_cfg.scenario_embed_dim),
                    rank=int(b.rank), specific_rank=int(b.specific_rank),
                    generator_hidden=tuple(int(w) for w in b.generator_hidden),
                    generator_features=tuple(b.generator_features),
                    use_shared=bool(b.use_shared), use_specific=bool(b.use_specific),
                    combine=b.combine, mi_estimator=b.mi_estimator, mi_dim=int(b.mi_dim),
                    mi_temperature=float(b.mi_temperature),
                    scenario_matmul=scenario_matmul, **common)


# ---- Flax <-> torch parameter mapping -------------------------------------------------------

def param_paths(model: nn.Module) -> dict[tuple[str, ...], nn.Parameter]:
  """Flax parameter path (as in `variables['params']`) -> the torch parameter holding it."""
  out: dict[tuple[str, ...], nn.Parameter] = {}

  def dense(prefix, d):
    out[(*prefix, 'kernel')] = d.kernel
    out[(*prefix, 'bias')] = d.bias

  for name, p in model.features.tables.items():
    out[('features', name)] = p
  dense(('output',), model.output)
  if isinstance(model, TorchMLP):
    for i, d in enumerate(model.mlp.layers):
      dense(('mlp', f'dense_{i}'), d)
    return out
  out[('scenario_embed', 'table', 'embedding')] = model.scenario_embed
  for i, d in enumerate(model.generator.mlp.layers):
    dense(('generator', 'mlp', f'dense_{i}'), d)
  dense(('generator', 'out'), model.generator.out)
  for l, layer in enumerate(model.layers):
    for attr in ('kernel', 'bias', 'shared_in', 'shared_out', 'specific_in', 'specific_out'):
      if hasattr(layer, attr):
        out[(f'layer_{l}', attr)] = getattr(layer, attr)
  return out


def _flatten(tree: Mapping, prefix=()) -> dict:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      flat.update(_flatten(v, (*prefix, k)))
    else:
      flat[(*prefix, k)] = v
  return flat


def _unflatten(flat: dict) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def load_jax_params(model: nn.Module, params: Mapping) -> None:
  """Copies a Flax `params` tree (numpy or jax arrays) into the torch model, in place."""
  flat, targets = _flatten(params), param_paths(model)
  if set(flat) != set(targets):
    raise ValueError(f'parameter trees differ: only in flax {sorted(set(flat) - set(targets))}, '
                     f'only in torch {sorted(set(targets) - set(flat))}')
  with torch.no_grad():
    for path, p in targets.items():
      value = torch.from_numpy(np.array(flat[path], dtype=np.float32))
      if value.shape != p.shape:
        raise ValueError(f'{"/".join(path)}: flax {tuple(value.shape)} vs torch {tuple(p.shape)}')
      p.copy_(value)


def grads_as_jax_tree(model: nn.Module) -> dict:
  """The parameters' `.grad` as numpy arrays in the Flax params tree structure (None -> zeros)."""
  return _unflatten({path: (p.grad if p.grad is not None else torch.zeros_like(p)).detach()
                     .cpu().numpy() for path, p in param_paths(model).items()})


def params_as_jax_tree(model: nn.Module) -> dict:
  return _unflatten({path: p.detach().cpu().numpy() for path, p in param_paths(model).items()})


def to_torch_batch(batch: Mapping, device='cpu') -> dict:
  """A numpy batch (model inputs) as torch tensors: ids int64, floats float32."""
  out = {}
  for k, v in batch.items():
    if isinstance(v, Mapping):
      out[k] = to_torch_batch(v, device)
      continue
    v = np.asarray(v)
    t = torch.from_numpy(v.astype(np.int64) if v.dtype.kind in 'iu' else v.astype(np.float32))
    out[k] = t.to(device)
  return out


class Optimizers:
  """Several optimizers stepped together (dense Adam + SparseAdam for sparse tables)."""

  def __init__(self, *optimizers):
    self.optimizers = [o for o in optimizers if o is not None]

  def zero_grad(self, set_to_none: bool = True):
    for o in self.optimizers:
      o.zero_grad(set_to_none=set_to_none)

  def step(self):
    for o in self.optimizers:
      o.step()


def make_adam(model: nn.Module, lr: float = 1e-3):
  """optax.adam's defaults (b1 0.9, b2 0.999, eps 1e-8): torch.optim.Adam on the dense
  parameters and, if the model has sparse tables, torch.optim.SparseAdam (LazyAdam) on those."""
  sparse_ids = {id(p) for n, p in model.features.tables.items() if model.features.is_sparse(n)}
  dense = [p for p in model.parameters() if id(p) not in sparse_ids]
  sparse = [p for p in model.parameters() if id(p) in sparse_ids]
  adam = torch.optim.Adam(dense, lr=lr, betas=(0.9, 0.999), eps=1e-8)
  if not sparse:
    return adam
  return Optimizers(adam, torch.optim.SparseAdam(sparse, lr=lr, betas=(0.9, 0.999), eps=1e-8))


def train_step(model, optimizer, batch, mi_weight: float):
  """One step: forward, loss, backward, Adam; returns the loss tensor (not synced)."""
  optimizer.zero_grad(set_to_none=True)
  loss, _ = loss_fn(model(batch), batch, mi_weight)
  loss.backward()
  optimizer.step()
  return loss.detach()

"""MI-DPG's modulated backbone layer and its weight generator (the model is in midpg.py).

ModulatedDense: h (W ⊙ (1 + M_s)) + b with M_s = P C_s Q + A_s B_s (or W = M_s, `combine =
'replace'`). The S weights (S, d_in, d_out) are built once per step and applied through the
shared scenario path (`scenario_ops.scenario_matmul`, config `model.scenario_matmul`); with
per-example cores (instance-aware generator) the decomposed forward pass
h (W ⊙ P C Q) = sum_{a,c} C[a,c] ((h ⊙ P[:, a]) W) ⊙ Q[c, :] costs r + r_s matmuls and never
builds a (B, d_in, d_out) tensor.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.errors import ConfigError
from midpg_jax.models.layers import MLP
from midpg_jax.models.scenario_ops import Routing, apply_cores, scenario_matmul

COMBINES = ('modulate', 'replace')


class ModulatedDense(nn.Module):
  """One backbone layer whose weight is modulated per scenario by a generated low-rank matrix."""

  features: int
  num_scenarios: int
  rank: int
  specific_rank: int
  use_shared: bool = True
  use_specific: bool = True
  combine: str = 'modulate'

  def setup_params(self, d_in: int):
    modulate = self.combine == 'modulate'
    p = {}
    if modulate:
      p['kernel'] = self.param('kernel', nn.initializers.lecun_normal(), (d_in, self.features))
      # Zero-init of one factor of each product makes M = 0 at the start (identity modulation);
      # the input factors' scale then only sets how fast M moves.
      in_init = nn.initializers.normal(stddev=1.0 / math.sqrt(max(self.rank, 1)))
      spec_in_init = nn.initializers.normal(stddev=1.0 / math.sqrt(max(self.rank, 1)))
      out_init = spec_out_init = nn.initializers.zeros
    else:
      # 'replace': M is the weight itself, so it must start variance-preserving like a dense
      # layer (as the zoo's APG): Var(P C Q)_ij = r Var(P) Var(Q) = 1 / d_in with P of fan-in
      # d_in and Q of fan-in r (C = I at the start), and likewise for A_s B_s; with both parts
      # on, each gets half the variance.
      parts = int(self.use_shared) + int(self.use_specific)
      in_init = nn.initializers.lecun_normal()
      spec_in_init = nn.initializers.lecun_normal(batch_axis=(0,))
      out_init = nn.initializers.variance_scaling(1.0 / parts, 'fan_in', 'truncated_normal')
      spec_out_init = nn.initializers.variance_scaling(1.0 / parts, 'fan_in', 'truncated_normal',
                                                       batch_axis=(0,))
    p['bias'] = self.param('bias', nn.initializers.zeros, (self.features,))
    if self.use_shared:
      p['P'] = self.param('shared_in', in_init, (d_in, self.rank))  # (d_in, r)
      p['Q'] = self.param('shared_out', out_init, (self.rank, self.features))  # (r, d_out)
    if self.use_specific:
      p['A'] = self.param('specific_in', spec_in_init,
                          (self.num_scenarios, d_in, self.specific_rank))  # (S, d_in, r_s)
      p['B'] = self.param('specific_out', spec_out_init,  # (S, r_s, d_out)
                          (self.num_scenarios, self.specific_rank, self.features))
    return p

  def scenario_weights(self, p, core: jax.Array) -> jax.Array:
    """(S, d_in, d_out) weights from cores (S, r, r)."""
    # One scenario at a time with 2-D ops: M_s = [P C_s, A_s] [Q; B_s] is one rank-(r + r_s)
    # matmul, and the kernel's gradient is a sum of S elementwise terms (XLA's CPU reduction
    # over a stacked (S, d_in, d_out) axis is several times slower).
    ws = []
    for s in range(self.num_scenarios):
      u, v = [], []
      if self.use_shared:
        u.append(p['P'] @ core[s])
        v.append(p['Q'])
      if self.use_specific:
        u.append(p['A'][s])
        v.append(p['B'][s])
      m = (jnp.concatenate(u, axis=1) @ jnp.concatenate(v, axis=0)) if u else 0.0
      ws.append(p['kernel'] * (1.0 + m) if self.combine == 'modulate' else m)
    return jnp.stack(ws)

  def summary(self, p, core: jax.Array | None, core_scenario: jax.Array | None,
              mean_core: jax.Array, present: jax.Array, sketch_u: jax.Array,
              sketch_v: jax.Array):
    """What the MI term and the logs see of this layer's weighting matrices, from the low-rank
    factors only (never a (N, d_in, d_out) tensor):

    * sketch (N, K): m_k(n) = u_k^T M(n) v_k = (u_k^T P) C_n (Q v_k) + (u_k^T A_s)(B_s v_k) for
      the N generated cores `core` (N, r, r) of scenarios `core_scenario` (N,); with core = None
      (one core per scenario, `mean_core`), the S scenarios' sketches (S, K);
    * diversity: mean pairwise cosine distance 1 - <M_s, M_t> / (|M_s| |M_t|) between the
      scenarios' M_s = P mean_core_s Q + A_s B_s (mean_core (S, r, r): each scenario's core, or
      its batch mean in the instance-aware mode, where M is linear in C so this is the mean M),
      over the pairs of `present` scenarios; 1 when M = 0;
    * rms: root mean square entry of those M_s.
    """
    num_s = self.num_scenarios
    left, right = [], []  # M_s = left_s (S, d_in, R) @ right_s (S, R, d_out)
    if self.use_shared:
      left.append(jnp.einsum('ia,sac->sic', p['P'], mean_core))
      right.append(jnp.broadcast_to(p['Q'], (num_s, *p['Q'].shape)))
    if self.use_specific:
      left.append(p['A'])
      right.append(p['B'])
    left, right = jnp.concatenate(left, axis=2), jnp.concatenate(right, axis=1)
    if core is None:  # the scenarios' own M_s: three small einsums on the factors above
      sketch = jnp.einsum('skr,srk->sk', jnp.einsum('ki,sir->skr', sketch_u, left),
                          jnp.einsum('srd,kd->srk', right, sketch_v))
    else:
      sketch = jnp.zeros((core.shape[0], sketch_u.shape[0]), core.dtype)
      if self.use_shared:
        up, qv = sketch_u @ p['P'], p['Q'] @ sketch_v.T  # (K, r), (r, K)
        sketch = sketch + jnp.einsum('ka,nac,ck->nk', up, core, qv)
      if self.use_specific:
        ua = jnp.einsum('ki,sir->skr', sketch_u, p['A'])  # (S, K, r_s)
        bv = jnp.einsum('srd,kd->srk', p['B'], sketch_v)  # (S, r_s, K)
        sketch = sketch + jnp.einsum('skr,srk->sk', ua, bv)[core_scenario]
    gram = jnp.einsum('sia,tib->stab', left, left) * jnp.einsum('sad,tbd->stab', right, right)
    inner = jnp.sum(gram, axis=(2, 3))  # (S, S) Frobenius inner products <M_s, M_t>
    sq = jnp.diagonal(inner)
    cos = inner / (jnp.sqrt(sq[:, None] * sq[None, :]) + 1e-12)
    pairs = (present[:, None] & present[None, :]) & ~jnp.eye(num_s, dtype=bool)
    diversity = jnp.sum(jnp.where(pairs, 1.0 - cos, 0.0)) / jnp.maximum(jnp.sum(pairs), 1)
    rms = jnp.sqrt(jnp.sum(jnp.where(present, sq, 0.0))
                   / jnp.maximum(jnp.sum(present), 1) / (left.shape[1] * right.shape[2]))
    return sketch, diversity, rms

  @nn.compact
  def __call__(self, h: jax.Array, scenario: jax.Array, core: jax.Array,
               routing: Routing | str, summary_inputs: tuple | None = None):
    """h (N, d_in) in the routing's row order; core (S, r, r) with a `Routing`, or, for
    routing = 'instance', h (B, d_in) in batch order, scenario (B,) and core (B, r, r).

    With `summary_inputs` = (core or None, core_scenario, mean_core, present, sketch_u, sketch_v)
    (see `summary`), returns
    (out, self.summary(...)) instead of out.
    """
    if self.combine not in COMBINES:
      raise ConfigError(f'unknown model.midpg.combine {self.combine!r}; choose one of {COMBINES}')
    p = self.setup_params(h.shape[-1])
    if isinstance(routing, str):
      if routing != 'instance':
        raise ValueError(f'unknown path {routing!r}')
      out = self._decomposed(p, h, scenario, core)
    else:
      out = scenario_matmul(h, self.scenario_weights(p, core), routing)
    out = out + p['bias']
    if summary_inputs is None:
      return out
    return out, self.summary(p, *summary_inputs)

  def _decomposed(self, p, h, scenario, core):
    """Per-example cores (B, r, r) without building per-example weights."""
    modulate = self.combine == 'modulate'
    out = h @ p['kernel'] if modulate else 0.0
    if self.use_shared:
      if modulate:
        t = jnp.einsum('bi,ia->bai', h, p['P']) @ p['kernel']  # (B, r, d_out)
        v = jnp.einsum('bad,bac->bcd', t, core)  # (B, r, d_out)
        out = out + jnp.einsum('bcd,cd->bd', v, p['Q'])
      else:  # APG's ((h P) C) Q
        out = out + apply_cores(h @ p['P'], core) @ p['Q']
    if self.use_specific:
      a = p['A'][scenario]  # (B, d_in, r_s)
      b = p['B'][scenario]  # (B, r_s, d_out)
      if modulate:
        t = jnp.einsum('bi,bik->bki', h, a) @ p['kernel']  # (B, r_s, d_out)
        out = out + jnp.einsum('bkd,bkd->bd', t, b)
      else:
        out = out + jnp.einsum('bk,bkd->bd', jnp.einsum('bi,bik->bk', h, a), b)
    return out


class WeightGenerator(nn.Module):
  """The auxiliary network g: z -> one (r, r) core per modulated layer, C = I + g(z)."""

  num_layers: int
  rank: int
  hidden: Sequence[int] = (64,)
  act: str = 'relu'

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = MLP(self.hidden, self.act, name='mlp')(z)
    g = nn.Dense(self.num_layers * self.rank * self.rank, name='out',
                 kernel_init=nn.initializers.lecun_normal())(h)
    g = g.reshape(z.shape[0], self.num_layers, self.rank, self.rank)
    return jnp.eye(self.rank, dtype=g.dtype) + g  # (N, L, r, r)

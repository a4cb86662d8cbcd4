"""MI-DPG: decomposable parameter generation with a mutual-information regulariser.

Cheng, Ding, Dong, He, Zhang, Mo. "MI-DPG: Decomposable Parameter Generation Network Based on Mutual
Information for Multi-Scenario Recommendation", CIKM 2023.

Only the paper's abstract is available. What it states: an auxiliary network generates a
scenario-conditioned dynamic weighting matrix, combined from decomposed scenario-specific and
scenario-shared low-rank matrices; the backbone's parameters are weighted by it; a mutual
information regulariser between the scenario-aware input and the weighting matrix diversifies the
scenarios' parameters. Everything below marked *[our reading]* is this project's reconstruction
(shared/docs/MIDPG.md), not the paper's text; each choice is a config value.

Per modulated layer l (d_in -> d_out), scenario s, scenario-aware input z:

  C_l(z)  = I_r + g_l(z)                                   (r, r)     generated core
  M_l(s)  = P_l C_l(z) Q_l + A_{l,s} B_{l,s}               (d_in, d_out)
  h_l     = act(h_{l-1} (W_l ⊙ (1 + M_l(s))) + b_l)

* [our reading] The weighting matrix *multiplies* the backbone weight entry-wise (`combine =
  'modulate'`), so a rank-(r + r_s) M reaches every entry of a full-rank W. `combine = 'replace'`
  is the APG-style alternative W_l(s) = M_l(s) (rank-capped), kept for the ablation.
* [our reading] Q_l and B_{l,s} start at zero, so M = 0 and MI-DPG *is* the plain backbone at
  initialisation; the core starts at the identity (APG's habit) so the shared factor is learnt as
  a scenario-independent P Q first and then bent per scenario.
* [our reading] The MI regulariser scores the generated weighting matrices themselves: per layer
  a FIXED random bilinear sketch m_k = u_k^T M v_k (K = `mi_dim` entries, computed from the
  factors: (u_k^T P) C (Q v_k) + (u_k^T A_s)(B_s v_k)) of each scenario's M (scenario-only z) or
  of each example's M (instance-aware z; prototypes = per-scenario batch means), against a fixed
  random projection of z, by a cosine critic with temperature `mi_temperature`, in InfoNCE (or
  JSD / MINE, `mi_estimator`; `midpg_jax/mi.py`). No trainable head sits between the bound and
  M, so the bound rises only if the scenarios' M move apart (and towards their own z); at M = 0
  the critic is linear in the sketch, so the gradient reaches Q and B from the first step.
  Per layer the mean pairwise cosine distance between the scenarios' M is returned as
  `diagnostics` (logged as train/diversity_l<l>, with train/m_rms_l<l>).

Two computation paths, never a (B, d_in, d_out) tensor:
* scenario-only generator input (default): M takes S values per batch, so the S modulated weights
  (S, d_in, d_out) are built once per step and each row is multiplied by its scenario's weight
  (`scenario_matmul`):
  - 'tiled' (default): rows are laid out once, before the embedding lookup, in scenario-sorted
    tiles of T rows, each scenario's rows padded to whole tiles (at most S - 1 extra tiles); every
    layer is one batched matmul of the (NT, T, d_in) tiles with their scenarios' weights
    (NT, d_in, d_out), NT = ceil-ish(B / T) + S - 1 << B; the logits are gathered back at the
    end. ~1x the FLOPs of the plain backbone plus the padding; the fastest on CPU (bench.py).
  - 'ragged': `jax.lax.ragged_dot` on scenario-sorted rows (a true grouped matmul where XLA has
    one; on CPU it lowers to S masked dense matmuls);
  - 'onehot': every row times all S weights, (B, S, d_out), mixed by the one-hot scenario;
  - 'masked': a loop over scenarios, each one's matmul over all rows, kept where the row is
    its scenario's (S x the FLOPs, no (B, S, d_out) intermediate).
* instance-aware input (`generator_features` non-empty): the decomposed forward pass
  h (W ⊙ P C Q) = sum_{a,c} C[a,c] ((h ⊙ P[:, a]) W) ⊙ Q[c, :], costing r + r_s matmuls.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax import mi
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.layers import (FeatureEmbedding, MLP, ScenarioEmbedding, activation,
                                     scenario_counts)
from midpg_jax.errors import ConfigError

COMBINES = ('modulate', 'replace')
SCENARIO_MATMULS = ('tiled', 'ragged', 'onehot', 'masked')


def tile_rows(batch_size: int, num_scenarios: int) -> int:
  """Rows per tile of the 'tiled' path: ~sqrt(16 B), a power of two in [32, 512].

  Smaller tiles pad less (the padding is < T rows per scenario) but gather more weight copies
  (one (d_in, d_out) per tile); this balance was measured with bench.py on CPU.
  """
  del num_scenarios
  t = 2 ** round(math.log2(math.sqrt(16 * max(batch_size, 1))))
  return int(min(512, max(32, t)))


class TileLayout(NamedTuple):
  """Scenario-sorted rows padded to whole tiles (path 'tiled')."""

  rows: jax.Array  # (NT * T,) the batch row at each padded position (row 0 for padding)
  position: jax.Array  # (B,) the padded position of each batch row
  tile_scenario: jax.Array  # (NT,) the scenario of each tile (padding-only tiles: S - 1)
  tile: int  # T


def tile_layout(scenario: jax.Array, num_scenarios: int, tile: int) -> TileLayout:
  """Static-shape layout: NT = (B + S (T - 1)) // T tiles always hold every scenario's rows.

  Sort-free (XLA's CPU sort is slow): a row's place within its scenario is a running count.
  """
  batch = scenario.shape[0]
  num_tiles = (batch + num_scenarios * (tile - 1)) // tile
  onehot = (scenario[:, None] == jnp.arange(num_scenarios)[None, :]).astype(jnp.int32)
  running = jnp.cumsum(onehot, axis=0)  # (B, S)
  counts = running[-1]
  rank = jnp.sum(running * onehot, axis=1) - 1  # (B,) place of each row within its scenario
  tiles = (counts + tile - 1) // tile
  tile_end = jnp.cumsum(tiles)
  padded_start = (tile_end - tiles) * tile  # first padded position of each scenario
  position = (padded_start[scenario] + rank).astype(jnp.int32)
  rows = jnp.zeros((num_tiles * tile,), jnp.int32).at[position].set(
      jnp.arange(batch, dtype=jnp.int32))
  tile_scenario = jnp.minimum(jnp.searchsorted(tile_end, jnp.arange(num_tiles), side='right'),
                              num_scenarios - 1).astype(jnp.int32)
  return TileLayout(rows, position, tile_scenario, tile)


def _take_batch_rows(batch, rows: jax.Array):
  """The model inputs of `batch` at `rows` (ids before the embedding lookup: cheap to gather)."""
  out = dict(batch)
  for key in ('cat', 'dense', 'scenario'):
    if key in batch:
      out[key] = jnp.asarray(batch[key])[rows]
  if 'multi' in batch:
    out['multi'] = {k: jnp.asarray(v)[rows] for k, v in batch['multi'].items()}
  return out


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

  def summary(self, p, core: jax.Array, core_scenario: jax.Array, mean_core: jax.Array,
              present: jax.Array, sketch_u: jax.Array, sketch_v: jax.Array):
    """What the MI term and the logs see of this layer's weighting matrices, from the low-rank
    factors only (never a (N, d_in, d_out) tensor):

    * sketch (N, K): m_k(n) = u_k^T M(n) v_k = (u_k^T P) C_n (Q v_k) + (u_k^T A_s)(B_s v_k) for
      the N generated cores `core` (N, r, r) of scenarios `core_scenario` (N,);
    * diversity: mean pairwise cosine distance 1 - <M_s, M_t> / (|M_s| |M_t|) between the
      scenarios' M_s = P mean_core_s Q + A_s B_s (mean_core (S, r, r): each scenario's core, or
      its batch mean in the instance-aware mode, where M is linear in C so this is the mean M),
      over the pairs of `present` scenarios; 1 when M = 0;
    * rms: root mean square entry of those M_s.
    """
    num_s = self.num_scenarios
    sketch = jnp.zeros((core.shape[0], sketch_u.shape[0]), core.dtype)
    left, right = [], []  # M_s = left_s (S, d_in, R) @ right_s (S, R, d_out)
    if self.use_shared:
      up, qv = sketch_u @ p['P'], p['Q'] @ sketch_v.T  # (K, r), (r, K)
      sketch = sketch + jnp.einsum('ka,nac,ck->nk', up, core, qv)
      left.append(jnp.einsum('ia,sac->sic', p['P'], mean_core))
      right.append(jnp.broadcast_to(p['Q'], (num_s, *p['Q'].shape)))
    if self.use_specific:
      ua = jnp.einsum('ki,sir->skr', sketch_u, p['A'])  # (S, K, r_s)
      bv = jnp.einsum('srd,kd->srk', p['B'], sketch_v)  # (S, r_s, K)
      sketch = sketch + jnp.einsum('skr,srk->sk', ua, bv)[core_scenario]
      left.append(p['A'])
      right.append(p['B'])
    left, right = jnp.concatenate(left, axis=2), jnp.concatenate(right, axis=1)
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
  def __call__(self, h: jax.Array, scenario: jax.Array, core: jax.Array, path: str,
               group_sizes: jax.Array | None = None, summary_inputs: tuple | None = None):
    """h (B, d_in); scenario (B,); core (S, r, r) or, for path 'instance', (B, r, r).

    Path 'tiled': h (NT * T, d_in) in tile layout and `scenario` (NT,) the tiles' scenarios.
    With `summary_inputs` = (core_scenario, mean_core, present, sketch_u, sketch_v), returns
    (out, self.summary(...)) instead of out.
    """
    if self.combine not in COMBINES:
      raise ConfigError(f'unknown model.midpg.combine {self.combine!r}; choose one of {COMBINES}')
    p = self.setup_params(h.shape[-1])
    out = self._forward(p, h, scenario, core, path, group_sizes)
    if summary_inputs is None:
      return out
    return out, self.summary(p, core, *summary_inputs)

  def _forward(self, p, h, scenario, core, path, group_sizes):
    if path == 'tiled':
      w = self.scenario_weights(p, core)
      num_tiles = scenario.shape[0]
      tiles = h.reshape(num_tiles, h.shape[0] // num_tiles, h.shape[-1])  # (NT, T, d_in)
      # (NT, d_in, d_out) tile weights, NT << B. A one-hot matmul, a custom VJP with a per-tile
      # loop or a sorted segment-sum for dW measured no faster on CPU than this gather.
      out = jnp.einsum('nti,nio->nto', tiles, w[scenario]).reshape(h.shape[0], -1)
    elif path == 'masked':
      w = self.scenario_weights(p, core)
      out = jnp.zeros((h.shape[0], self.features), h.dtype)
      for s in range(self.num_scenarios):
        out = jnp.where((scenario == s)[:, None], h @ w[s], out)
    elif path == 'ragged':
      w = self.scenario_weights(p, core)
      out = jax.lax.ragged_dot(h, w, group_sizes.astype(jnp.int32))  # rows sorted by scenario
    elif path == 'onehot':
      w = self.scenario_weights(p, core)
      per_scenario = jnp.einsum('bi,sio->bso', h, w)  # (B, S, d_out)
      out = jnp.einsum('bso,bs->bo', per_scenario,
                       jax.nn.one_hot(scenario, self.num_scenarios, dtype=h.dtype))
    elif path == 'instance':
      out = self._decomposed(p, h, scenario, core)
    else:
      raise ValueError(f'unknown path {path!r}')
    return out + p['bias']

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
        out = out + jnp.einsum('ba,bac->bc', h @ p['P'], core) @ p['Q']
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
    return jnp.eye(self.rank) + g  # (N, L, r, r)


class MIDPG(nn.Module):
  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  scenario_embed_dim: int = 16
  rank: int = 4
  specific_rank: int = 4
  generator_hidden: Sequence[int] = (64,)
  generator_features: Sequence[str] = ()
  use_shared: bool = True
  use_specific: bool = True
  combine: str = 'modulate'
  scenario_matmul: str = 'tiled'
  mi_estimator: str = 'infonce'
  mi_dim: int = 16  # K: sketch entries per layer
  mi_temperature: float = 0.5
  act: str = 'relu'
  dropout: float = 0.0

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.spec.num_scenarios
    scenario = jnp.asarray(batch['scenario'], jnp.int32)  # (B,)
    counts = scenario_counts(scenario, num_scen)
    instance = bool(self.generator_features)
    if instance:
      path = 'instance'
    else:
      if self.scenario_matmul not in SCENARIO_MATMULS:
        raise ConfigError(f'unknown model.scenario_matmul {self.scenario_matmul!r}; '
                         f'choose one of {SCENARIO_MATMULS}')
      path = self.scenario_matmul
    embed = FeatureEmbedding(self.spec, self.embed_dim, name='features')
    if path == 'tiled':  # embed the rows straight into the tile layout
      layout = tile_layout(scenario, num_scen, tile_rows(scenario.shape[0], num_scen))
      x, fields = embed(_take_batch_rows(batch, layout.rows))  # (NT * T, d_0)
    else:
      x, fields = embed(batch)  # (B, d_0)
    scen_embed = ScenarioEmbedding(num_scen, self.scenario_embed_dim, name='scenario_embed')
    generator = WeightGenerator(len(self.hidden), self.rank, tuple(self.generator_hidden),
                                self.act, name='generator')
    if instance:
      unknown = set(self.generator_features) - set(fields)
      if unknown:
        raise ConfigError(f'model.midpg.generator_features names unknown fields {sorted(unknown)}; '
                         f'known: {sorted(fields)}')
      z = jnp.concatenate([scen_embed(scenario)] + [fields[f] for f in self.generator_features],
                          axis=-1)  # (B, d_z)
      cores = generator(z)  # (B, L, r, r)
    else:
      z = scen_embed(jnp.arange(num_scen))  # (S, d_z): z depends on the scenario only
      cores = generator(z)  # (S, L, r, r)

    if instance:
      core_scenario = scenario  # (B,): one generated core per example
      mean_cores = (jax.ops.segment_sum(cores, scenario, num_scen)
                    / jnp.maximum(counts, 1)[:, None, None, None].astype(cores.dtype))
      present = counts > 0
    else:
      core_scenario = jnp.arange(num_scen)  # (S,): one core per scenario
      mean_cores, present = cores, jnp.ones((num_scen,), bool)

    h, rows = x, scenario
    if path == 'ragged':
      order = jnp.argsort(scenario, stable=True)
      h, rows = x[order], scenario[order]
    elif path == 'tiled':
      rows = layout.tile_scenario
    widths = (x.shape[-1], *self.hidden)
    sketches, queries, diagnostics = [], [], {}
    for l, width in enumerate(self.hidden):
      layer = ModulatedDense(width, num_scen, self.rank, self.specific_rank, self.use_shared,
                             self.use_specific, self.combine, name=f'layer_{l}')
      sketch_u = jnp.asarray(mi.fixed_sketch(l, 0, (self.mi_dim, widths[l])))  # (K, d_in)
      sketch_v = jnp.asarray(mi.fixed_sketch(l, 1, (self.mi_dim, width)))  # (K, d_out)
      h, (sketch, diversity, rms) = layer(
          h, rows, cores[:, l], path, counts,
          summary_inputs=(core_scenario, mean_cores[:, l], present, sketch_u, sketch_v))
      h = activation(self.act)(h)
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
      sketches.append(sketch)  # (N, K)
      queries.append(z @ jnp.asarray(mi.fixed_sketch(l, 2, (self.mi_dim, z.shape[-1]))).T)
      diagnostics[f'diversity_l{l}'] = diversity
      diagnostics[f'm_rms_l{l}'] = rms
    logits = nn.Dense(1, name='output')(h)[:, 0]
    if path == 'ragged':
      logits = jnp.zeros_like(logits).at[order].set(logits)
    elif path == 'tiled':
      logits = logits[layout.position]  # back to batch order; padding rows dropped

    outputs = {'diagnostics': diagnostics}
    if self.mi_estimator != 'none':
      if instance:
        # Prototype of s: the mean sketch of the M generated for its examples in the batch.
        protos = [jax.ops.segment_sum(m, scenario, num_scen)
                  / jnp.maximum(counts, 1)[:, None].astype(m.dtype) for m in sketches]
        scores = mi.critic_scores(queries, protos, self.mi_temperature)  # (B, S)
      else:
        scores = mi.critic_scores(queries, sketches, self.mi_temperature)[scenario]  # (B, S)
      outputs['mi_bound'] = mi.mi_lower_bound(self.mi_estimator, scores, scenario, present)
    outputs['logits'] = logits
    return outputs

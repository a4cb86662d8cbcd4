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
* [our reading] The MI regulariser is InfoNCE of the scenario-aware input against per-scenario
  prototypes of the generated cores (cosine critic / temperature); JSD and MINE behind
  `mi_estimator`; see `midpg_jax/mi.py`.

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
    # Zero-init of one factor of each product makes M = 0 at the start (identity modulation).
    zero_or_lecun = nn.initializers.zeros if modulate else nn.initializers.lecun_normal()
    factor_init = nn.initializers.normal(stddev=1.0 / jnp.sqrt(max(self.rank, 1)))
    p = {}
    if modulate:
      p['kernel'] = self.param('kernel', nn.initializers.lecun_normal(), (d_in, self.features))
    p['bias'] = self.param('bias', nn.initializers.zeros, (self.features,))
    if self.use_shared:
      p['P'] = self.param('shared_in', factor_init, (d_in, self.rank))  # (d_in, r)
      p['Q'] = self.param('shared_out', zero_or_lecun, (self.rank, self.features))  # (r, d_out)
    if self.use_specific:
      p['A'] = self.param('specific_in', factor_init,
                          (self.num_scenarios, d_in, self.specific_rank))  # (S, d_in, r_s)
      p['B'] = self.param('specific_out', lambda k, s: zero_or_lecun(k, s[1:])[None].repeat(
          s[0], 0), (self.num_scenarios, self.specific_rank, self.features))  # (S, r_s, d_out)
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

  @nn.compact
  def __call__(self, h: jax.Array, scenario: jax.Array, core: jax.Array, path: str,
               group_sizes: jax.Array | None = None) -> jax.Array:
    """h (B, d_in); scenario (B,); core (S, r, r) or, for path 'instance', (B, r, r).

    Path 'tiled': h (NT * T, d_in) in tile layout and `scenario` (NT,) the tiles' scenarios.
    """
    if self.combine not in COMBINES:
      raise ValueError(f'unknown model.combine {self.combine!r}; choose one of {COMBINES}')
    p = self.setup_params(h.shape[-1])
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


def _cosine_scores(u: jax.Array, m: jax.Array, temperature: float) -> jax.Array:
  u = u / (jnp.linalg.norm(u, axis=-1, keepdims=True) + 1e-6)
  m = m / (jnp.linalg.norm(m, axis=-1, keepdims=True) + 1e-6)
  return (u @ m.T) / temperature  # (B, S)


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
  mi_dim: int = 32
  mi_temperature: float = 0.1
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
        raise ValueError(f'unknown model.scenario_matmul {self.scenario_matmul!r}; '
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
        raise ValueError(f'model.generator_features names unknown fields {sorted(unknown)}; '
                         f'known: {sorted(fields)}')
      z = jnp.concatenate([scen_embed(scenario)] + [fields[f] for f in self.generator_features],
                          axis=-1)  # (B, d_z)
      cores = generator(z)  # (B, L, r, r)
    else:
      z = scen_embed(jnp.arange(num_scen))  # (S, d_z): z depends on the scenario only
      cores = generator(z)  # (S, L, r, r)

    outputs = {}
    if self.mi_estimator != 'none':
      query = nn.Dense(self.mi_dim, name='mi_query')(z)  # projection of the scenario-aware input
      proto = nn.Dense(self.mi_dim, name='mi_proto')(cores.reshape(cores.shape[0], -1))
      if instance:
        # Prototype of s = mean projection of the cores generated for its examples in the batch.
        proto = (jax.ops.segment_sum(proto, scenario, num_scen)
                 / jnp.maximum(counts, 1)[:, None].astype(proto.dtype))
        present = counts > 0
      else:
        query = query[scenario]
        present = jnp.ones((num_scen,), bool)
      scores = _cosine_scores(query, proto, self.mi_temperature)
      outputs['mi_bound'] = mi.mi_lower_bound(self.mi_estimator, scores, scenario, present)

    h, rows = x, scenario
    if path == 'ragged':
      order = jnp.argsort(scenario, stable=True)
      h, rows = x[order], scenario[order]
    elif path == 'tiled':
      rows = layout.tile_scenario
    for l, width in enumerate(self.hidden):
      layer = ModulatedDense(width, num_scen, self.rank, self.specific_rank, self.use_shared,
                             self.use_specific, self.combine, name=f'layer_{l}')
      h = activation(self.act)(layer(h, rows, cores[:, l], path, counts))
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    logits = nn.Dense(1, name='output')(h)[:, 0]
    if path == 'ragged':
      logits = jnp.zeros_like(logits).at[order].set(logits)
    elif path == 'tiled':
      logits = logits[layout.position]  # back to batch order; padding rows dropped
    outputs['logits'] = logits
    return outputs

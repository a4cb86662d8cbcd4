"""Per-scenario computation for every model (MI-DPG and the zoo): one path choice, one config key.

A multi-scenario layer holds one weight per scenario, (S, d_in, d_out), and each row of the batch
uses its own scenario's weight. Gathering a weight per row would build a (B, d_in, d_out) tensor,
which no model may do. Instead the rows are routed (`Routing`), by the path of the config key
`model.scenario_matmul`:

* 'tiled': the rows are laid out once, before the embedding lookup, in scenario-sorted tiles of T
  rows, each scenario's rows padded to whole tiles (`tile_layout`); every per-scenario matmul is
  one batched matmul of the (NT, T, d_in) tiles with their scenarios' weights (NT, d_in, d_out),
  NT <= B / T + S; the per-row results are gathered back to batch order at the end. ~1x the FLOPs
  of a shared layer plus the padding (< S T rows, `tile_rows` keeps it under B / 4).
* 'ragged': the same sort-free layout with T = 1 (no padding) and `jax.lax.ragged_dot` per matmul
  (a grouped matmul where XLA has one; XLA's CPU backend lowers it to S masked dense matmuls).
* 'onehot': every row is multiplied by all S weights, (B, S, d_out), and its own is selected;
  S times the FLOPs, no reordering.
* 'masked': a loop over the S scenarios, each one's matmul over all rows kept where the row is its
  scenario's; S times the FLOPs, no (B, S, d_out) intermediate.
* 'auto' (default): `resolve_path` picks by the platform the step is compiled for: 'tiled' on
  CPU (measured on this project's 2-core CPU, scripts/scenario_paths.py) and NVIDIA GPUs, 'onehot'
  on TPUs up to 32 scenarios (the roofline estimates of compiled train steps, v5e:4x4 and h100:8,
  docs/scaling.md: every path is memory-bound there, and on v5e the one-hot path moves the fewest
  bytes; on H100 'tiled' does).
* ONE_SCENARIO (not a config value): every row of the batch has the same scenario, because the
  caller grouped the rows (midpg-predict, `midpg_jax/predict.py`); each per-scenario matmul is one
  plain 2-D matmul with that scenario's weight: no padding rows, no weight gather.

Rows in the model's order may include padding rows ('tiled'): `Routing.valid` masks them out of
anything computed across rows (partitioned normalisation's batch moments).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jax.sharding import PartitionSpec as P

from midpg_jax.errors import ConfigError
from midpg_jax.models.layers import FeatureEmbedding, activation, scenario_counts

SCENARIO_MATMULS = ('auto', 'tiled', 'ragged', 'onehot', 'masked')
# For batches whose rows all have one scenario (see the module docstring); a model given mixed
# scenarios on this path computes every row with the first row's scenario.
ONE_SCENARIO = 'one_scenario'

# Initialisers for stacked kernels (N, d_in, d_out): fan-in is d_in, not N * d_in.
stacked_lecun = nn.initializers.lecun_normal(batch_axis=(0,))


def check_path(method: str) -> str:
  if method not in SCENARIO_MATMULS:
    raise ConfigError(f'unknown model.scenario_matmul {method!r}; choose one of {SCENARIO_MATMULS}')
  return method


# The most scenarios at which 'auto' takes 'onehot' on TPUs: the largest S measured (its FLOPs and
# its (N, S, d) intermediate grow with S).
TPU_ONEHOT_MAX_SCENARIOS = 32


def resolve_path(method: str, batch_size, num_scenarios: int, platform: str = 'cpu') -> str:
  """The concrete path of `method` on `platform` (see the module docstring for the numbers).

  A symbolic batch size (shape-polymorphic export) cannot size tiles: 'auto' and 'tiled' fall back
  to 'onehot', the same function with the same parameters.
  """
  if method == ONE_SCENARIO:
    return method
  check_path(method)
  if not isinstance(batch_size, int) and method in ('auto', 'tiled'):
    return 'onehot'
  if method != 'auto':
    return method
  if platform == 'tpu' and num_scenarios <= TPU_ONEHOT_MAX_SCENARIOS:
    return 'onehot'
  return 'tiled'


def tile_rows(batch_size: int, num_scenarios: int) -> int:
  """Rows per tile of the 'tiled' path: a power of two, ~sqrt(16 B) but small enough that the
  padding (< S T rows, ~S T / 2 expected) stays under B / 4, in [8, 512].

  Smaller tiles pad less but gather more weight copies (one (d_in, d_out) per tile); the sqrt
  balance was measured on CPU (benchmarks/speed) at S = 4 (where the cap leaves it, T = 256 at
  B = 4096), the cap by S with scripts/scenario_paths.py.
  """
  t = 2 ** round(math.log2(math.sqrt(16 * max(batch_size, 1))))
  cap = 2 ** int(math.log2(max(batch_size // (4 * max(num_scenarios, 1)), 1)))
  return int(min(512, max(8, min(t, cap))))


class TileLayout(NamedTuple):
  """Scenario-sorted rows padded to whole tiles, laid out per data shard: shard g's tiles hold
  only its own rows, and every index below is local to its shard (a shard's rows are rows
  [g B/G, (g + 1) B/G) of the batch, its tiles tiles [g NT/G, (g + 1) NT/G))."""

  rows: jax.Array  # (NT * T,) the shard's row at each padded position (row 0 for padding)
  position: jax.Array  # (B,) the padded position of each row within its shard
  tile_scenario: jax.Array  # (NT,) the scenario of each tile (padding-only tiles: S - 1)
  valid: jax.Array  # (NT * T,) bool, False at padding positions
  tile: int  # T


def tile_layout(scenario: jax.Array, num_scenarios: int, tile: int) -> TileLayout:
  """Static-shape layout of one shard: NT = (B + S (T - 1)) // T tiles always hold every
  scenario's rows.

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
  valid = jnp.zeros((num_tiles * tile,), bool).at[position].set(True)
  # searchsorted(tile_end, t, side='right') as a (NT, S) comparison (jnp.searchsorted fails to
  # trace inside shard_map in jax 0.10.2).
  ends_before = jnp.sum(tile_end[None, :] <= jnp.arange(num_tiles)[:, None], axis=1)
  tile_scenario = jnp.minimum(ends_before, num_scenarios - 1).astype(jnp.int32)
  return TileLayout(rows, position, tile_scenario, valid, tile)


# ---------------------------------------------------------------------------------------------
# Data shards. Under a mesh whose `data` axis splits the batch over G devices, everything that
# reorders rows (the layout, gathering the batch into it, gathering the results back) runs on
# each device's own rows, inside `jax.shard_map`: XLA's SPMD partitioner cannot sort or gather a
# sharded dimension locally, and gathered the whole global batch onto every device instead (every
# chip computed all B rows). The per-scenario matmuls between them need no shard_map: their
# leading tile axis is sharded like the rows, and replicated weights gathered per tile are local.

DATA_AXIS = 'data'


def target_platform() -> str:
  """The platform the step is compiled for: the context mesh's devices' (a compile-only TPU or GPU
  target on a CPU host included), else JAX's default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else getattr(mesh, 'abstract_device', None)
  return device.platform if device is not None else jax.default_backend()


def data_shards() -> int:
  """G: the devices the batch's rows are split over, the `data` axis of the mesh this step is
  traced under (`Partitioner` sets it; 1 outside a mesh, e.g. a plain jit or an export)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.axis_names:
    return 1
  return int(mesh.shape[DATA_AXIS])


def per_shard(fn, *args, replicated: tuple[int, ...] = ()):
  """fn applied to every data shard of `args` (pytrees of arrays split on their leading axis;
  the positions in `replicated` are whole on every shard); outputs concatenated on their leading
  axis. Without data shards, just fn(*args)."""
  if data_shards() == 1:
    return fn(*args)
  specs = tuple(P() if i in replicated else P(DATA_AXIS) for i in range(len(args)))
  return jax.shard_map(fn, in_specs=specs, out_specs=P(DATA_AXIS), axis_names={DATA_AXIS})(*args)


@jax.custom_vjp
def _unsort(y: jax.Array, position: jax.Array, rows: jax.Array, valid: jax.Array) -> jax.Array:
  return y[position]


def _unsort_fwd(y, position, rows, valid):
  return y[position], (rows, valid)


def _unsort_bwd(res, dy):
  # The layout is a bijection between the real rows and the valid padded positions, so the
  # gradient is a gather of the batch-order cotangents (zero at padding), not the scatter-add a
  # gather's transpose would be (XLA's CPU backend runs scatters row by row).
  rows, valid = res
  mask = valid.reshape(valid.shape + (1,) * (dy.ndim - 1))
  return jnp.where(mask, dy[rows], 0).astype(dy.dtype), None, None, None


_unsort.defvjp(_unsort_fwd, _unsort_bwd)


class Routing(NamedTuple):
  """Which scenario each row of the model's (possibly reordered, padded) batch belongs to."""

  scenario: jax.Array  # (N,) int32, in the order the model computes in
  counts: jax.Array  # (S,) rows per scenario in the whole batch (padding excluded)
  layout: TileLayout | None  # 'tiled' / 'ragged'; None: batch order ('onehot', 'masked')
  num_scenarios: int
  method: str  # the resolved path
  shards: int = 1  # G data shards, each routed on its own (`per_shard`)
  shard_counts: jax.Array | None = None  # (G * S,) rows per scenario of each shard

  def take_batch(self, batch):
    """The model inputs of `batch` in the model's row order (ids before the embedding lookup:
    cheap to gather)."""
    if self.layout is None:
      return batch
    inputs = {k: batch[k] for k in ('cat', 'dense', 'scenario', 'multi') if k in batch}
    gathered = per_shard(lambda rows, x: jax.tree.map(lambda v: jnp.asarray(v)[rows], x),
                         self.layout.rows, inputs)
    return {**batch, **gathered}

  def restore(self, y: jax.Array) -> jax.Array:
    """A per-row result (N, ...) back in batch order (B, ...); padding rows dropped."""
    if self.layout is None:
      return y
    layout = self.layout
    return per_shard(_unsort, y, layout.position, layout.rows, layout.valid)

  def valid(self, dtype) -> jax.Array | None:
    """(N,) 1 for real rows, 0 for padding; None when there is no padding."""
    return None if self.method != 'tiled' else self.layout.valid.astype(dtype)

  def shard_scenario(self) -> jax.Array:
    """(G,) ONE_SCENARIO: the scenario of each data shard's rows (its first row's)."""
    return per_shard(lambda s: s[:1], self.scenario)

  def one_hot(self, dtype=jnp.float32) -> jax.Array:
    return jax.nn.one_hot(self.scenario, self.num_scenarios, dtype=dtype)  # (N, S)

  def scenario_sum(self, x: jax.Array) -> jax.Array:
    """x (N, d) summed over each scenario's rows -> (S, d) (padding rows included: mask them).

    'tiled': each tile holds one scenario's rows, so a sum within every tile (a reduction) and a
    segment sum of the NT << N tile sums; a segment sum over the N rows is a scatter-add, which
    XLA's CPU backend runs row by row."""
    if self.method == 'tiled':
      tile_scenario = self.layout.tile_scenario
      tiles = x.reshape(tile_scenario.shape[0], -1, *x.shape[1:]).sum(axis=1)  # (NT, d)
      return jax.ops.segment_sum(tiles, tile_scenario, self.num_scenarios)
    return jax.ops.segment_sum(x, self.scenario, self.num_scenarios)


def make_routing(scenario: jax.Array, num_scenarios: int, method: str) -> Routing:
  scenario = jnp.asarray(scenario, jnp.int32)
  shards = data_shards()
  shard_rows = scenario.shape[0] // shards if isinstance(scenario.shape[0], int) else \
      scenario.shape[0]
  path = resolve_path(method, shard_rows, num_scenarios, target_platform())
  # Counted per shard, then summed (an all-reduce of S numbers): a bincount of the sharded
  # scenario column made libtpu's partitioner all-gather the column onto every chip.
  shard_counts = per_shard(lambda s: scenario_counts(s, num_scenarios), scenario)  # (G * S,)
  counts = shard_counts.reshape(shards, num_scenarios).sum(axis=0)
  if path in ('onehot', 'masked', ONE_SCENARIO):
    return Routing(scenario, counts, None, num_scenarios, path, shards, shard_counts)
  tile = tile_rows(shard_rows, num_scenarios) if path == 'tiled' else 1
  layout = per_shard(lambda s: tile_layout(s, num_scenarios, tile)._replace(tile=None), scenario)
  layout = layout._replace(tile=tile)
  rows_scenario = jnp.repeat(layout.tile_scenario, tile)  # (NT * T,)
  return Routing(rows_scenario, counts, layout, num_scenarios, path, shards, shard_counts)


def embed_and_route(model: nn.Module, batch) -> tuple[jax.Array, Routing]:
  """The zoo models' common start, called inside their compact `__call__`: routes the rows and
  embeds the features (submodule 'features') in the model's row order. Returns x (N, d_0)."""
  routing = make_routing(batch['scenario'], model.spec.num_scenarios, model.scenario_matmul)
  x, _ = FeatureEmbedding(model.spec, model.embed_dim, name='features')(routing.take_batch(batch))
  return x, routing


def scenario_matmul(h: jax.Array, w: jax.Array, routing: Routing) -> jax.Array:
  """h (N, ..., d_in) times its row's scenario weight w (S, d_in, d_out) -> (N, ..., d_out)."""
  lead, d_in = h.shape[:-1], h.shape[-1]
  per_row = math.prod(lead[1:])  # extra positions per row (e.g. experts), kept contiguous
  flat = h.reshape(-1, d_in)
  if routing.method == 'tiled':
    tile_scenario = routing.layout.tile_scenario
    tiles = flat.reshape(tile_scenario.shape[0], -1, d_in)  # (NT, T * per_row, d_in)
    # (NT, d_in, d_out) tile weights, NT << B. A one-hot matmul, a custom VJP with a per-tile
    # loop or a sorted segment-sum for dW measured no faster on CPU than this gather.
    out = jnp.einsum('nti,nio->nto', tiles, w[tile_scenario])
  elif routing.method == ONE_SCENARIO:
    if routing.shards == 1:
      out = flat @ w[routing.scenario[0]]  # (N, d_out): one (d_in, d_out) slice, one matmul
    else:  # one such matmul per shard, with its own scenario's weight
      out = jnp.einsum('gni,gio->gno', flat.reshape(routing.shards, -1, d_in),
                       w[routing.shard_scenario()]).reshape(-1, w.shape[-1])
  elif routing.method == 'ragged':
    # Group sizes are the shard's own (the weight enters each shard whole; shard_map sums its
    # gradient over the shards).
    out = per_shard(lambda x, w_, c: jax.lax.ragged_dot(x, w_, c * per_row), flat, w,
                    routing.shard_counts, replicated=(1,))
  elif routing.method == 'masked':
    scenario = jnp.repeat(routing.scenario, per_row)[:, None]  # (N, 1)
    out = jnp.zeros((flat.shape[0], w.shape[-1]), jnp.result_type(flat, w))
    for s in range(w.shape[0]):
      out = jnp.where(scenario == s, flat @ w[s], out)
  else:  # 'onehot'
    per_scenario = jnp.einsum('ni,sio->nso', flat, w)  # (N, S, d_out)
    onehot = jnp.repeat(routing.one_hot(per_scenario.dtype), per_row, axis=0)  # (N, S)
    out = jnp.einsum('nso,ns->no', per_scenario, onehot)
  return out.reshape(*lead, w.shape[-1])


def per_row(table: jax.Array, routing: Routing, ndim: int) -> jax.Array:
  """table (S, d) looked up per row and shaped to broadcast against a (N, ..., d) array.

  'tiled': one lookup per tile, repeated over its T rows (a broadcast XLA fuses into the
  consumer; its gradient is a sum within each tile, not a scatter-add of N rows; a per-row gather
  measured ~2x slower, forward and backward)."""
  if routing.method == 'tiled':
    tiles = table[routing.layout.tile_scenario]  # (NT, d)
    rows = jnp.repeat(tiles, routing.layout.tile, axis=0)  # (N, d)
  elif routing.method == ONE_SCENARIO:
    rows = table[routing.shard_scenario()]  # (G, d): one scenario per shard's rows
    if routing.shards > 1:
      rows = jnp.repeat(rows, routing.scenario.shape[0] // routing.shards, axis=0)  # (N, d)
  else:
    rows = table[routing.scenario]  # (N, d)
  return rows.reshape(rows.shape[0], *([1] * (ndim - 2)), rows.shape[-1])


def split_hidden(hidden: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(bottom, top) of the shared widths: experts / shared layers use the bottom, towers the top.

  With one width there is no tower hidden layer, only the output layer.
  """
  hidden = tuple(hidden)
  return (hidden[:-1], hidden[-1:]) if len(hidden) > 1 else (hidden, ())


class ScenarioDense(nn.Module):
  """A dense layer with one kernel and bias per scenario; each row uses its own scenario's."""

  features: int
  num_scenarios: int
  kernel_init: nn.initializers.Initializer = stacked_lecun

  @nn.compact
  def __call__(self, h: jax.Array, routing: Routing) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (self.num_scenarios, h.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.num_scenarios, self.features))
    return scenario_matmul(h, kernel, routing) + per_row(bias, routing, h.ndim)


class ScenarioMLP(nn.Module):
  """An MLP whose every layer is a `ScenarioDense`: one tower per scenario."""

  widths: Sequence[int]
  num_scenarios: int
  act: str = 'relu'
  dropout: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array, routing: Routing, train: bool = False) -> jax.Array:
    for i, w in enumerate(self.widths):
      h = activation(self.act)(ScenarioDense(w, self.num_scenarios, name=f'dense_{i}')(h, routing))
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return h


def shared_input_experts(h: jax.Array, kernel: jax.Array) -> jax.Array:
  """h (B, d) times each of the stacked kernels (K, d, w) -> (K, B, w) expert-major, as ONE
  (B, d) x (d, K w) matmul and one transpose. An einsum 'bi,kio->bko' measured ~6x slower in
  MMoE's profile on CPU (XLA made it K batched matmuls of a broadcast input at ~15-20 GFLOP/s)."""
  num, d, w = kernel.shape
  flat = h @ jnp.transpose(kernel, (1, 0, 2)).reshape(d, num * w)  # (B, K w), expert-minor
  return jnp.transpose(flat.reshape(h.shape[0], num, w), (1, 0, 2))


class ParallelMLP(nn.Module):
  """`num` independent MLPs (experts) evaluated at once with stacked kernels.

  Input (B, d) (the same input for every expert) or (num, B, d) (one input per expert);
  output (num, B, widths[-1]), EXPERT-MAJOR. Why that layout: XLA's CPU backend computes a
  matmul batched over experts only with the batch axis leading, so a batch-major (B, num, w)
  layer, 'bki,kio->bko', paid a (B, num, w) <-> (num, B, w) transpose of its input and output
  in the forward and again in the backward pass (35 % of MMoE's op time). Expert-major, only the
  first layer of a shared input transposes, once (`shared_input_experts`). A caller that needs
  (B, num, w) swaps the axes itself.
  """

  num: int
  widths: Sequence[int]
  act: str = 'relu'
  dropout: float = 0.0

  @nn.compact
  def __call__(self, h: jax.Array, train: bool = False) -> jax.Array:
    for i, w in enumerate(self.widths):
      kernel = self.param(f'kernel_{i}', stacked_lecun, (self.num, h.shape[-1], w))
      bias = self.param(f'bias_{i}', nn.initializers.zeros, (self.num, w))
      if h.ndim == 2:
        h = shared_input_experts(h, kernel)  # (num, B, w)
      else:
        h = jnp.einsum('kbi,kio->kbo', h, kernel)  # (num, B, w): batch axis leading
      h = activation(self.act)(h + bias[:, None, :])
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return h


def mix_experts(gate: jax.Array, experts: jax.Array) -> jax.Array:
  """gate (B, K) mixing expert-major experts (K, B, d) -> (B, d), as an elementwise product
  summed over the leading expert axis, not einsum 'bk,kbd->bd': XLA makes that a matmul batched
  over B of (1, K) x (K, d) rows, transposing the experts to (B, K, d) for it (and to (B, d, K)
  for the gate's gradient)."""
  return jnp.sum(gate.T[:, :, None] * experts, axis=0)


class StackedWeights(nn.Module):
  """A layer's kernel and bias, returned instead of applied, under the names and initialisers of
  the layer it stands for (a `ParallelMLP` layer: (num, d_in, w) kernel; an `nn.Dense`: (d_in, w)),
  so a model can fuse them into one matmul with other weights and keep its parameter tree."""

  kernel_name: str
  bias_name: str
  kernel_shape: tuple

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    init = stacked_lecun if len(self.kernel_shape) == 3 else nn.initializers.lecun_normal()
    kernel = self.param(self.kernel_name, init, self.kernel_shape)
    bias = self.param(self.bias_name, nn.initializers.zeros,
                      (*self.kernel_shape[:-2], self.kernel_shape[-1]))
    return kernel, bias


class ScenarioGate(nn.Module):
  """Softmax mixing weights over `num` experts, from a gate network of the row's scenario."""

  num: int
  num_scenarios: int

  @nn.compact
  def __call__(self, h: jax.Array, routing: Routing) -> jax.Array:
    return jax.nn.softmax(ScenarioDense(self.num, self.num_scenarios, name='dense')(h, routing))


def apply_cores(x: jax.Array, core: jax.Array) -> jax.Array:
  """x (B, K) times its row's own generated core (B, K, K) -> (B, K). As a broadcast multiply and a
  sum, which XLA fuses: the batched (1, K) x (K, K) dot it replaces measured 2.1x (K = 16) and 1.4x
  (K = 32) slower on CPU, forward and backward."""
  return jnp.sum(x[:, :, None] * core, axis=1)


def generated_core(raw: jax.Array, rank: int) -> jax.Array:
  """A generated (.., rank, rank) matrix from a raw (.., rank*rank) output: I + raw / sqrt(rank).

  [our choice] Centring the core on the identity and scaling the generated part keeps the
  decomposed layer's output at the scale of a plain dense layer at initialisation.
  """
  core = raw.reshape(*raw.shape[:-1], rank, rank)
  return jnp.eye(rank, dtype=raw.dtype) + core / math.sqrt(rank)

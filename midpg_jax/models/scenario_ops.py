"""Per-scenario computation shared by the multi-scenario model zoo.

A multi-scenario layer holds one weight per scenario, (S, d_in, d_out), and each row of the batch
uses its own scenario's weight. Gathering a weight per row would build a (B, d_in, d_out) tensor,
which no model may do. Instead the rows are routed, by one of two paths (config key
`model.zoo_scenario_matmul`; MI-DPG has its own `scenario_matmul`):

* 'ragged': the model sorts its rows by scenario once (`Routing.take`), every per-scenario matmul is
  one grouped matmul (`jax.lax.ragged_dot`), and the logits are put back in batch order at the end
  (`Routing.restore`).
* 'onehot': every row is multiplied by all S weights, (B, S, d_out), and its own is selected;
  S times the FLOPs, no sort.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.models.layers import FeatureEmbedding, activation, scenario_counts
from midpg_jax.errors import ConfigError

ROUTINGS = ('ragged', 'onehot')

# Initialisers for stacked kernels (N, d_in, d_out): fan-in is d_in, not N * d_in.
stacked_lecun = nn.initializers.lecun_normal(batch_axis=(0,))


class Routing(NamedTuple):
  """Which scenario each row of the (possibly reordered) batch belongs to."""

  scenario: jax.Array  # (B,) int32, in the order the model computes in
  counts: jax.Array  # (S,) rows per scenario
  order: jax.Array | None  # the sort applied to the batch ('ragged'), None for 'onehot'
  num_scenarios: int
  method: str

  def take(self, x: jax.Array) -> jax.Array:
    """Rows of a batch-ordered array in the model's order."""
    return x if self.order is None else x[self.order]

  def restore(self, y: jax.Array) -> jax.Array:
    """A per-row result back in batch order."""
    return y if self.order is None else jnp.zeros_like(y).at[self.order].set(y)

  def one_hot(self, dtype=jnp.float32) -> jax.Array:
    return jax.nn.one_hot(self.scenario, self.num_scenarios, dtype=dtype)  # (B, S)


def embed_and_route(model: nn.Module, batch) -> tuple[jax.Array, 'Routing']:
  """The zoo models' common start, called inside their compact `__call__`: embeds the features
  (submodule 'features') and routes the rows. Returns x (B, d_0) in the model's row order."""
  x, _ = FeatureEmbedding(model.spec, model.embed_dim, name='features')(batch)
  routing = make_routing(batch['scenario'], model.spec.num_scenarios, model.scenario_matmul)
  return routing.take(x), routing


def make_routing(scenario: jax.Array, num_scenarios: int, method: str) -> Routing:
  if method not in ROUTINGS:
    raise ConfigError(f'unknown model.zoo_scenario_matmul {method!r}; choose one of {ROUTINGS}')
  scenario = jnp.asarray(scenario, jnp.int32)
  order = None
  if method == 'ragged':
    order = jnp.argsort(scenario, stable=True)
    scenario = scenario[order]
  return Routing(scenario, scenario_counts(scenario, num_scenarios), order, num_scenarios,
                 method)


def scenario_matmul(h: jax.Array, w: jax.Array, routing: Routing) -> jax.Array:
  """h (B, ..., d_in) times its row's scenario weight w (S, d_in, d_out) -> (B, ..., d_out)."""
  lead, d_in = h.shape[:-1], h.shape[-1]
  per_row = math.prod(lead[1:])  # extra positions per row (e.g. experts), kept contiguous
  flat = h.reshape(-1, d_in)
  if routing.method == 'ragged':
    out = jax.lax.ragged_dot(flat, w, (routing.counts * per_row).astype(jnp.int32))
  else:
    per_scenario = jnp.einsum('ni,sio->nso', flat, w)  # (N, S, d_out)
    onehot = jnp.repeat(routing.one_hot(h.dtype), per_row, axis=0)  # (N, S)
    out = jnp.einsum('nso,ns->no', per_scenario, onehot)
  return out.reshape(*lead, w.shape[-1])


def per_row(table: jax.Array, routing: Routing, ndim: int) -> jax.Array:
  """table (S, d) looked up per row and shaped to broadcast against a (B, ..., d) array."""
  rows = table[routing.scenario]  # (B, d)
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


class ParallelMLP(nn.Module):
  """`num` independent MLPs (experts) evaluated at once with stacked kernels.

  Input (B, d) (the same input for every expert) or (B, num, d); output (B, num, widths[-1]).
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
      spec = 'bi,kio->bko' if h.ndim == 2 else 'bki,kio->bko'
      h = activation(self.act)(jnp.einsum(spec, h, kernel) + bias)
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return h


class ScenarioGate(nn.Module):
  """Softmax mixing weights over `num` experts, from a gate network of the row's scenario."""

  num: int
  num_scenarios: int

  @nn.compact
  def __call__(self, h: jax.Array, routing: Routing) -> jax.Array:
    return jax.nn.softmax(ScenarioDense(self.num, self.num_scenarios, name='dense')(h, routing))


def generated_core(raw: jax.Array, rank: int) -> jax.Array:
  """A generated (.., rank, rank) matrix from a raw (.., rank*rank) output: I + raw / sqrt(rank).

  [our choice] Centring the core on the identity and scaling the generated part keeps the
  decomposed layer's output at the scale of a plain dense layer at initialisation.
  """
  core = raw.reshape(*raw.shape[:-1], rank, rank)
  return jnp.eye(rank, dtype=raw.dtype) + core / math.sqrt(rank)

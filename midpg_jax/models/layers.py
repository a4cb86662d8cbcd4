"""Building blocks shared by every model: feature embeddings and plain MLPs."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.errors import ConfigError

# Embedding tables are named `embed_<field>` in every model so that the distribution code can find
# them by name and shard them by rows (vocabulary) on the mesh's `model` axis.
EMBED_PREFIX = 'embed_'
embedding_init = nn.initializers.normal(stddev=0.05)

ACTIVATIONS: dict[str, Callable] = {'relu': nn.relu, 'gelu': nn.gelu, 'tanh': jnp.tanh,
                                    'silu': nn.silu}


def activation(name: str) -> Callable:
  if name not in ACTIVATIONS:
    raise ConfigError(f'unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[name]


class FeatureEmbedding(nn.Module):
  """Embeds every categorical field, mean-pools multi-valued fields, appends dense features.

  Returns (x, fields): x (B, d_0) is the concatenated model input with
  d_0 = (F + F_multi) * embed_dim + D; fields maps each field name to its embedding (B, E).
  """

  spec: FeatureSpec
  embed_dim: int

  @nn.compact
  def __call__(self, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    fields = {}
    cat = batch['cat']  # (B, F)
    for j, (name, vocab) in enumerate(zip(self.spec.cat_names, self.spec.cat_vocab_sizes)):
      table = self.param(EMBED_PREFIX + name, embedding_init, (vocab, self.embed_dim))
      fields[name] = jnp.take(table, cat[:, j], axis=0)  # (B, E)
    for name, vocab in zip(self.spec.multi_names, self.spec.multi_vocab_sizes):
      table = self.param(EMBED_PREFIX + name, embedding_init, (vocab, self.embed_dim))
      ids = batch['multi'][name]  # (B, L), 0 = padding
      mask = (ids > 0).astype(table.dtype)[..., None]
      summed = jnp.sum(jnp.take(table, ids, axis=0) * mask, axis=1)
      fields[name] = summed / jnp.maximum(jnp.sum(mask, axis=1), 1.0)  # (B, E)
    parts = [fields[n] for n in (*self.spec.cat_names, *self.spec.multi_names)]
    if self.spec.num_dense:
      parts.append(batch['dense'].astype(parts[0].dtype if parts else jnp.float32))  # the
      # tables' compute dtype (bfloat16 under mixed precision), not a promotion to float32
    return jnp.concatenate(parts, axis=-1), fields


class ScenarioEmbedding(nn.Module):
  num_scenarios: int
  dim: int

  @nn.compact
  def __call__(self, scenario: jax.Array) -> jax.Array:
    return nn.Embed(self.num_scenarios, self.dim, embedding_init=embedding_init,
                    name='table')(scenario)


class MLP(nn.Module):
  """Dense layers with an activation (and optional dropout) after each."""

  widths: Sequence[int]
  act: str = 'relu'
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, w in enumerate(self.widths):
      x = activation(self.act)(nn.Dense(w, name=f'dense_{i}')(x))
      if self.dropout > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


def scenario_counts(scenario: jax.Array, num_scenarios: int) -> jax.Array:
  """(S,) number of rows of each scenario in the batch."""
  return jnp.bincount(scenario, length=num_scenarios)

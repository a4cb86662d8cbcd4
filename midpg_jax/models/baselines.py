"""Scenario-blind reference models: the plain backbone DNN and logistic regression.

`shared_bottom` is MI-DPG's backbone without any modulation: the same embeddings, hidden widths
and output layer, with the scenario ignored. It is the "M = 0" model that MI-DPG equals at
initialisation, and the scenario-blind baseline of the benchmark.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.layers import FeatureEmbedding, MLP


class SharedBottom(nn.Module):
  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, _ = FeatureEmbedding(self.spec, self.embed_dim, name='features')(batch)
    h = MLP(tuple(self.hidden), self.act, self.dropout, name='mlp')(x, train)
    return {'logits': nn.Dense(1, name='output')(h)[:, 0]}


class Logistic(nn.Module):
  """Logistic regression: one weight per id of every field plus a linear term on dense features."""

  spec: FeatureSpec

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, _ = FeatureEmbedding(self.spec, 1, name='features')(batch)  # (B, F + D)
    return {'logits': nn.Dense(1, name='output')(x)[:, 0]}

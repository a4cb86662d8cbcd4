"""Logistic regression (`logistic`), the floor: one weight per id and per dense feature.

[our choice] Its output bias starts at logit(base rate of the training labels) (`base_rate`, given
by the trainer): from p = 0.5 a linear model at the default learning rate spends thousands of
steps moving its bias to a 2-8 % base rate and can end below 0.5 AUC. The other models keep a
zero output bias (their hidden layers absorb the offset; every model of the zoo is initialised
alike). It has no hidden layers, so it is the one model that is not a `ScenarioModel`.
"""

from __future__ import annotations

import math

import flax.linen as nn

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.layers import FeatureEmbedding
from midpg_jax.models.registry import register_model


def logit(p: float) -> float:
  return math.log(p / (1.0 - p))


class Logistic(nn.Module):
  """One weight per id of every field plus a linear term on dense features."""

  spec: FeatureSpec
  base_rate: float | None = None  # None: output bias 0 (p = 0.5)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, _ = FeatureEmbedding(self.spec, 1, name='features')(batch)  # (B, F + D)
    bias = 0.0 if self.base_rate is None else logit(self.base_rate)
    dense = nn.Dense(1, name='output', bias_init=nn.initializers.constant(bias))
    return {'logits': dense(x)[:, 0]}


@register_model('logistic')
def _build(cfg, block, spec, base_rate):
  return Logistic(spec=spec, base_rate=base_rate)

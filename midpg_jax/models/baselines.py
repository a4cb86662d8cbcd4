"""Reference models: the scenario-blind DNN (`mlp`), Shared-Bottom (`shared_bottom`) and
logistic regression (`logistic`).

* `mlp` is MI-DPG's backbone without any modulation: the same embeddings, hidden widths and output
  layer, with the scenario ignored. It is the "M = 0" model that MI-DPG equals at initialisation,
  and the scenario-blind baseline.
* `shared_bottom` is the standard multi-scenario Shared-Bottom (as in the peers' code, e.g.
  Scenario-Wise-Rec): a shared bottom MLP (all hidden widths but the last) and one tower per
  scenario (the last hidden width and the output layer), each row going through its own
  scenario's tower (`scenario_ops` routing, `model.scenario_matmul`).
* `logistic` is the floor: one weight per id and per dense feature. [our choice] Its output bias
  starts at logit(base rate of the training labels) (`base_rate`, given by the trainer): from
  p = 0.5 a linear model at the default learning rate spends thousands of steps moving its bias
  to a 2-8 % base rate and can end below 0.5 AUC. The other models keep a zero output bias (their
  hidden layers absorb the offset; every model of the zoo is initialised alike).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.layers import FeatureEmbedding, MLP
from midpg_jax.models.scenario_ops import ScenarioDense, ScenarioMLP, embed_and_route, split_hidden


class Mlp(nn.Module):
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


class SharedBottom(nn.Module):
  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  scenario_matmul: str = 'auto'

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, routing = embed_and_route(self, batch)  # (B, d_0), rows in the routing's order
    bottom, top = split_hidden(self.hidden)
    h = MLP(bottom, self.act, self.dropout, name='bottom')(x, train)
    num_scen = self.spec.num_scenarios
    h = ScenarioMLP(top, num_scen, self.act, self.dropout, name='towers')(h, routing, train)
    logits = ScenarioDense(1, num_scen, name='tower_output')(h, routing)[:, 0]
    return {'logits': routing.restore(logits)}


def logit(p: float) -> float:
  return math.log(p / (1.0 - p))


class Logistic(nn.Module):
  """Logistic regression: one weight per id of every field plus a linear term on dense features."""

  spec: FeatureSpec
  base_rate: float | None = None  # None: output bias 0 (p = 0.5)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, _ = FeatureEmbedding(self.spec, 1, name='features')(batch)  # (B, F + D)
    bias = 0.0 if self.base_rate is None else logit(self.base_rate)
    dense = nn.Dense(1, name='output', bias_init=nn.initializers.constant(bias))
    return {'logits': dense(x)[:, 0]}

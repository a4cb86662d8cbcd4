"""STAR: star-topology adaptive recommender, and its partitioned normalisation.

Sheng et al. "One Model to Serve All: Star Topology Adaptive Recommender for Multi-Domain CTR
Prediction", CIKM 2021.

* Partitioned normalisation (PN) of the pooled embeddings: statistics per scenario (the batch's
  moments of the scenario's rows in training, the scenario's running moments at inference) and
  scale / shift combined from shared and scenario-specific parameters:
  z' = (gamma * gamma_s) (z - E_s) / sqrt(Var_s + eps) + (beta + beta_s).
* Star-topology FCN: every layer's weight is the Hadamard product of a shared and a scenario
  weight, W_s* = W_s ⊙ W, its bias the sum b_s* = b_s + b; the output layer too.
* Auxiliary network: a 2-layer network on the scenario indicator's embedding, whose logit is added
  to the main network's.

[our choices] The scenario weights W_s start at one and b_s at zero, so STAR starts as the shared
FCN (the paper gives no initialisation). The paper feeds the auxiliary network "the domain indicator
and features depicting the domain"; our schema has no such features, so it gets the scenario
embedding only. The paper samples each batch from one domain; our batches mix scenarios, so the
training moments of scenario s are computed over its rows of the batch (a scenario absent from the
batch keeps its running statistics).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.layers import MLP, ScenarioEmbedding, activation
from midpg_jax.models.scenario_ops import Routing, embed_and_route, per_row, scenario_matmul


class PartitionedNorm(nn.Module):
  """Normalisation with per-scenario statistics (running ones in the `batch_stats` collection)."""

  num_scenarios: int
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array, routing: Routing, train: bool = False) -> jax.Array:
    num_scen, d = self.num_scenarios, x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (d,))
    bias = self.param('bias', nn.initializers.zeros, (d,))
    scenario_scale = self.param('scenario_scale', nn.initializers.ones, (num_scen, d))
    scenario_bias = self.param('scenario_bias', nn.initializers.zeros, (num_scen, d))
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (num_scen, d))
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (num_scen, d))
    if train:
      n = jnp.maximum(routing.counts, 1)[:, None].astype(x.dtype)
      valid = routing.valid(x.dtype)  # padding rows of the 'tiled' path count for nothing
      keep = (lambda v: v) if valid is None else (lambda v: v * valid[:, None])
      mean = routing.scenario_sum(keep(x)) / n  # (S, d)
      centred = x - per_row(mean, routing, 2)  # (N, d)
      var = routing.scenario_sum(keep(jnp.square(centred))) / n
      if not self.is_initializing():
        present = (routing.counts > 0)[:, None]
        m = self.momentum
        ra_mean.value = jnp.where(present, m * ra_mean.value + (1 - m) * mean, ra_mean.value)
        ra_var.value = jnp.where(present, m * ra_var.value + (1 - m) * var, ra_var.value)
    else:
      mean, var = ra_mean.value, ra_var.value
      centred = x - per_row(mean, routing, 2)
    # Per scenario (S, d) first, then one lookup each: y = (x - E_s) a_s + b_s.
    row_scale = jax.lax.rsqrt(var + self.epsilon) * (scale * scenario_scale)  # (S, d)
    return centred * per_row(row_scale, routing, 2) + per_row(bias + scenario_bias, routing, 2)


class StarDense(nn.Module):
  """out = h (W_s ⊙ W) + (b_s + b) for the row's scenario s."""

  features: int
  num_scenarios: int

  @nn.compact
  def __call__(self, h: jax.Array, routing: Routing) -> jax.Array:
    d_in = h.shape[-1]
    shared_kernel = self.param('kernel', nn.initializers.lecun_normal(), (d_in, self.features))
    shared_bias = self.param('bias', nn.initializers.zeros, (self.features,))
    scenario_kernel = self.param('scenario_kernel', nn.initializers.ones,
                                 (self.num_scenarios, d_in, self.features))
    scenario_bias = self.param('scenario_bias', nn.initializers.zeros,
                               (self.num_scenarios, self.features))
    kernel = scenario_kernel * shared_kernel[None]  # (S, d_in, d_out): S weights, not B
    return scenario_matmul(h, kernel, routing) + shared_bias + per_row(scenario_bias, routing, 2)


class STAR(nn.Module):
  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  scenario_embed_dim: int = 16
  aux_hidden: Sequence[int] = (32,)
  pn_momentum: float = 0.9
  scenario_matmul: str = 'auto'

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.spec.num_scenarios
    x, routing = embed_and_route(self, batch)
    h = PartitionedNorm(num_scen, self.pn_momentum, name='partitioned_norm')(x, routing, train)
    for l, width in enumerate(self.hidden):
      h = activation(self.act)(StarDense(width, num_scen, name=f'star_{l}')(h, routing))
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    main = StarDense(1, num_scen, name='star_output')(h, routing)[:, 0]
    # The auxiliary network reads the scenario only: run it once per scenario (S rows, not N)
    # and look its logit up per row.
    z = ScenarioEmbedding(num_scen, self.scenario_embed_dim, name='scenario_embed')(
        jnp.arange(num_scen))  # (S, d_z)
    aux = nn.Dense(1, name='aux_output')(MLP(tuple(self.aux_hidden), self.act, name='aux')(z))
    return {'logits': routing.restore(main + per_row(aux, routing, 2)[:, 0])}

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

from midpg_jax.errors import ConfigError
from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import MLP, activation
from midpg_jax.models.registry import Block, register_model
from midpg_jax.models.scenario_ops import Routing, per_row, scenario_matmul

# Momentum of the running per-scenario statistics of partitioned normalisation (star, hamur):
# 0.9 is PyTorch BatchNorm's default (momentum=0.1), which the peers' code uses.
PN_MOMENTUM = 0.9


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


class STAR(ScenarioModel):
  uses_scenario_path = True
  aux_hidden: Sequence[int] = (32,)
  pn_momentum: float = 0.9

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.num_scenarios
    x, routing = self.embed_routed(batch)
    h = PartitionedNorm(num_scen, self.pn_momentum, name='partitioned_norm')(x, routing, train)
    for l, width in enumerate(self.hidden):
      h = activation(self.act)(StarDense(width, num_scen, name=f'star_{l}')(h, routing))
      h = self.drop(h, train)
    main = StarDense(1, num_scen, name='star_output')(h, routing)[:, 0]
    # The auxiliary network reads the scenario only: run it once per scenario (S rows, not N)
    # and look its logit up per row.
    z = self.embed_scenarios(jnp.arange(num_scen))  # (S, d_z)
    aux = nn.Dense(1, name='aux_output')(MLP(tuple(self.aux_hidden), self.act, name='aux')(z))
    return {'logits': routing.restore(main + per_row(aux, routing, 2)[:, 0])}


def pn_momentum(block: Block) -> float:
  """The block's `pn_momentum` (STAR's and HAMUR's partitioned normalisation), checked."""
  if not 0 <= block.pn_momentum < 1:
    raise ConfigError(f'{block.path("pn_momentum")} must lie in [0, 1), got {block.pn_momentum}')
  return float(block.pn_momentum)


@register_model('star', aux_hidden=(32,),  # the auxiliary network on the scenario embedding
                pn_momentum=PN_MOMENTUM)
def _build(cfg, block, spec, base_rate):
  return STAR(spec=spec, aux_hidden=block.widths('aux_hidden'), pn_momentum=pn_momentum(block),
              **shared_fields(cfg))

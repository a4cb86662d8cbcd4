"""Models that re-weight the backbone's neurons per scenario: PEPNet (EPNet, PPNet), AdaSparse."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models.layers import FeatureEmbedding, ScenarioEmbedding, activation
from midpg_jax.errors import ConfigError

GATE_SCALE = 2.0  # PEPNet's gamma: Gate NU outputs lie in (0, 2)
ADASPARSE_FORMS = ('binarization', 'scaling', 'fusion')


class GateNU(nn.Module):
  """PEPNet's gate neural unit: gamma * sigmoid(W2 relu(W1 x + b1) + b2), gamma = 2.

  [our choice, as Scenario-Wise-Rec] the hidden width equals the output width.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(self.features, name='hidden')(x))
    return GATE_SCALE * jax.nn.sigmoid(nn.Dense(self.features, name='out')(h))


class PEPNet(nn.Module):
  """Parameter and Embedding Personalized Network, and its halves EPNet and PPNet.

  Chang et al. "PEPNet: Parameter and Embedding Personalized Network for Infusing with
  Personalized Prior Information", KDD 2023.

  * EPNet (`use_ep`): delta = GateNU(E(domain) ⊕ sg(E)) scales the general embedding E
    element-wise, O_ep = delta ⊗ E. The domain side is the scenario embedding (our schema has no
    other domain-side features); sg = stop-gradient, so the gate does not train the embeddings.
  * PPNet (`use_pp`): per hidden layer l a GateNU of the prior features
    O_prior ⊕ sg(O_ep) scales the layer's neurons, H_{l+1} = delta_l ⊗ f(H_l W_l + b_l).
    O_prior = the embeddings of `prior_fields` (the paper's user / item / author ids; default: all
    fields) and the scenario embedding.

  [our choices] The PPNet gate scales each hidden layer's output (so the input of the next layer,
  as in Scenario-Wise-Rec); one task, hence one tower.
  """

  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  scenario_embed_dim: int = 16
  use_ep: bool = True
  use_pp: bool = True
  prior_fields: Sequence[str] = ()

  @nn.compact
  def __call__(self, batch, train: bool = False):
    e, fields = FeatureEmbedding(self.spec, self.embed_dim, name='features')(batch)
    scenario = jnp.asarray(batch['scenario'], jnp.int32)
    domain = ScenarioEmbedding(self.spec.num_scenarios, self.scenario_embed_dim,
                               name='scenario_embed')(scenario)
    if self.use_ep:
      delta = GateNU(e.shape[-1], name='ep_gate')(
          jnp.concatenate([domain, jax.lax.stop_gradient(e)], axis=-1))
      e = delta * e
    if self.use_pp:
      names = tuple(self.prior_fields) or tuple(fields)
      prior = jnp.concatenate([fields[n] for n in names] + [domain, jax.lax.stop_gradient(e)],
                              axis=-1)
    h = e
    for l, width in enumerate(self.hidden):
      h = activation(self.act)(nn.Dense(width, name=f'dense_{l}')(h))
      if self.use_pp:
        h = h * GateNU(width, name=f'pp_gate_{l}')(prior)
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return {'logits': nn.Dense(1, name='output')(h)[:, 0]}


class Pruner(nn.Module):
  """AdaSparse's domain-aware pruner: neuron weighting factors pi = F(W [e_d ⊕ h]).

  binarization: pi = 1[sigmoid(alpha v) >= eps], gradient of sigmoid(alpha v) (straight-through);
  scaling:      pi = beta sigmoid(v);
  fusion:       pi = beta sigmoid(alpha v), set to 0 where it is below eps.
  alpha grows during training so sigmoid(alpha v) approaches a step.
  """

  form: str = 'fusion'
  beta: float = 2.0
  epsilon: float = 0.01

  @nn.compact
  def __call__(self, domain: jax.Array, h: jax.Array, alpha: jax.Array) -> jax.Array:
    v = nn.Dense(h.shape[-1], use_bias=False, name='dense')(
        jnp.concatenate([domain, h], axis=-1))
    if self.form == 'scaling':
      return self.beta * jax.nn.sigmoid(v)
    soft = jax.nn.sigmoid(alpha * v)
    if self.form == 'binarization':
      hard = (soft >= self.epsilon).astype(soft.dtype)
      return soft + jax.lax.stop_gradient(hard - soft)
    if self.form == 'fusion':
      scaled = self.beta * soft
      return scaled * jax.lax.stop_gradient((scaled >= self.epsilon).astype(soft.dtype))
    raise ConfigError(f'unknown model.adasparse.form {self.form!r}; choose one of {ADASPARSE_FORMS}')


class AdaSparse(nn.Module):
  """Adaptively sparse structures per domain.

  Yang et al. "AdaSparse: Learning Adaptively Sparse Structures for Multi-Domain Click-Through
  Rate Prediction", CIKM 2022.

  A pruner per layer turns the domain embedding e_d (and the layer's neurons) into weighting
  factors pi_l that scale -- and, in the binarization / fusion forms, switch off -- the neurons:
  the domain-agnostic input features, then every hidden layer's output. The domain embedding is
  also an input of the backbone, beside the pruned features. A flexible sparsity regulariser keeps
  each layer's sparsity ratio r_l (fraction of pi = 0) inside [r_min, r_max]:
  aux_loss = weight * sum_l lambda_l mean(pi_l), lambda_l = +1 below r_min (push pi to 0),
  -1 above r_max, 0 inside (not for the scaling form, which never prunes).

  [our reading] The paper's exact regulariser coefficients and schedule are not reproduced: the
  range, weight, alpha's start and per-step increment are config values (alpha as in
  Scenario-Wise-Rec). The step count that drives alpha lives in the `counters` collection.
  """

  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  scenario_embed_dim: int = 16
  form: str = 'fusion'
  beta: float = 2.0
  epsilon: float = 0.01
  alpha: float = 1.0
  alpha_step: float = 1e-4
  sparsity_weight: float = 0.01
  sparsity_range: Sequence[float] = (0.1, 0.5)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, _ = FeatureEmbedding(self.spec, self.embed_dim, name='features')(batch)
    scenario = jnp.asarray(batch['scenario'], jnp.int32)
    domain = ScenarioEmbedding(self.spec.num_scenarios, self.scenario_embed_dim,
                               name='scenario_embed')(scenario)
    steps = self.variable('counters', 'adasparse_steps', lambda: jnp.zeros((), jnp.int32))
    alpha = self.alpha + self.alpha_step * steps.value.astype(jnp.float32)
    alpha = alpha.astype(domain.dtype)  # the compute dtype (bfloat16 under mixed precision)
    if train and not self.is_initializing():
      steps.value = steps.value + 1
    pruner = lambda name: Pruner(self.form, self.beta, self.epsilon, name=name)  # noqa: E731
    factors = [pruner('pruner_input')(domain, x, alpha)]
    h = jnp.concatenate([domain, x * factors[0]], axis=-1)
    for l, width in enumerate(self.hidden):
      h = activation(self.act)(nn.Dense(width, name=f'dense_{l}')(h))
      if self.dropout > 0:
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
      factors.append(pruner(f'pruner_{l}')(domain, h, alpha))
      h = h * factors[-1]
    outputs = {'logits': nn.Dense(1, name='output')(h)[:, 0]}
    if self.sparsity_weight > 0 and self.form != 'scaling':  # scaling never prunes
      r_min, r_max = self.sparsity_range
      aux = 0.0
      for pi in factors:
        ratio = jax.lax.stop_gradient(jnp.mean((pi == 0).astype(jnp.float32)))
        sign = jnp.where(ratio < r_min, 1.0, jnp.where(ratio > r_max, -1.0, 0.0))
        aux = aux + sign * jnp.mean(pi.astype(jnp.float32))
      outputs['aux_loss'] = self.sparsity_weight * aux
    return outputs

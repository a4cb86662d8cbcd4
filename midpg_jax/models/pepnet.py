"""PEPNet (`pepnet`) and its halves EPNet (`epnet`) and PPNet (`ppnet`): the backbone's embeddings
and neurons re-weighted by gates of the scenario and prior features."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import activation
from midpg_jax.models.registry import register_model

GATE_SCALE = 2.0  # PEPNet's gamma: Gate NU outputs lie in (0, 2)


class GateNU(nn.Module):
  """PEPNet's gate neural unit: gamma * sigmoid(W2 relu(W1 x + b1) + b2), gamma = 2.

  [our choice, as Scenario-Wise-Rec] the hidden width equals the output width.
  """

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(self.features, name='hidden')(x))
    return GATE_SCALE * jax.nn.sigmoid(nn.Dense(self.features, name='out')(h))


class PEPNet(ScenarioModel):
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

  use_ep: bool = True
  use_pp: bool = True
  prior_fields: Sequence[str] = ()

  @nn.compact
  def __call__(self, batch, train: bool = False):
    e, fields = self.embed(batch)
    scenario = jnp.asarray(batch['scenario'], jnp.int32)
    domain = self.embed_scenarios(scenario)
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
      h = self.drop(h, train)
    return {'logits': self.output_logit(h)}


def _pepnet(cfg, block, spec, *, use_ep: bool, use_pp: bool) -> PEPNet:
  prior = block.fields('prior_fields', spec) if use_pp else ()
  return PEPNet(spec=spec, use_ep=use_ep,
                use_pp=use_pp, prior_fields=prior, **shared_fields(cfg))


# PPNet's prior fields (the paper's id fields); () = all fields.
@register_model('pepnet', prior_fields=())
def _build_pepnet(cfg, block, spec, base_rate):
  return _pepnet(cfg, block, spec, use_ep=True, use_pp=True)


@register_model('epnet')
def _build_epnet(cfg, block, spec, base_rate):
  return _pepnet(cfg, block, spec, use_ep=True, use_pp=False)


@register_model('ppnet', prior_fields=())
def _build_ppnet(cfg, block, spec, base_rate):
  return _pepnet(cfg, block, spec, use_ep=False, use_pp=True)

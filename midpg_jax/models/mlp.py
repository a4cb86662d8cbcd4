"""The scenario-blind DNN (`mlp`): MI-DPG's backbone without any modulation.

The same embeddings, hidden widths and output layer as MI-DPG, with the scenario ignored: the
"M = 0" model that MI-DPG equals at initialisation, and the scenario-blind baseline.
"""

from __future__ import annotations

import flax.linen as nn

from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import MLP
from midpg_jax.models.registry import register_model


class Mlp(ScenarioModel):

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, _ = self.embed(batch)
    h = MLP(tuple(self.hidden), self.act, self.dropout, name='mlp')(x, train)
    return {'logits': self.output_logit(h)}


@register_model('mlp')
def _build(cfg, block, spec, base_rate):
  return Mlp(spec=spec, **shared_fields(cfg))

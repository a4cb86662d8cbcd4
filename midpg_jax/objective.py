"""The training objective: L = BCE(y, sigmoid(logit)) + lambda * (-MI lower bound) [+ aux_loss].

`weight` (B,) masks padding examples (0) so a padded batch gives the loss of its real rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def weighted_bce(logits: jax.Array, labels: jax.Array, weight: jax.Array) -> jax.Array:
  per_example = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
  return jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def loss_fn(outputs: dict, batch: dict, mi_weight: float) -> tuple[jax.Array, dict]:
  """Returns (total loss, named parts for logging)."""
  bce = weighted_bce(outputs['logits'], batch['label'], batch['weight'])
  parts = {'bce': bce}
  total = bce
  if 'mi_bound' in outputs:
    parts['mi_bound'] = outputs['mi_bound']
    total = total - mi_weight * outputs['mi_bound']
  # Model diagnostics (e.g. MI-DPG's per-layer diversity of M): logged as train/<name>, no loss.
  parts.update(outputs.get('diagnostics', {}))
  if 'aux_loss' in outputs:  # a model's own auxiliary loss, already weighted by the model
    parts['aux_loss'] = outputs['aux_loss']
    total = total + outputs['aux_loss']
  return total, parts

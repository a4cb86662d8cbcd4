"""The training objective: L = BCE(y, sigmoid(logit)) + lambda * (-MI lower bound).

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
  return total, parts

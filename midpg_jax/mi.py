"""Mutual-information lower bounds between a scenario-aware input and scenario prototypes.

What the critic scores (built by `midpg_jax.models.midpg.MIDPG`, *[our reading]*): the generated
weighting matrices themselves, through a FIXED random bilinear sketch per layer,
m_k = u_k^T M v_k (`fixed_sketch`; no trainable head, so raising the bound means moving M), against
a fixed random projection of the scenario-aware input z; `critic_scores` turns them into the
(B, S) matrix below.

All estimators take a critic matrix `scores` (B, S): `scores[i, s]` = f(u_i, m_s), the critic value
of example i's scenario-aware input against scenario s's prototype (a projection of the weighting
parameters generated for s), the example's scenario ids `scenario` (B,), and `present` (S,), which
prototypes exist in this batch (in-batch prototypes can be missing). Each returns a lower bound of
I(z; M) in nats, to be *maximised*; the training loss uses its negative. Optional `weights` (B,)
count row i `weights[i]` times: when z depends on the scenario only, the B rows are S distinct
ones, so the caller passes the (S, S) scores, scenario = arange(S) and the scenarios' row counts
as weights: the same bound without any (B, S) array or its scatter-add gradient (MI-DPG's step:
869 -> 818 XLA ops, and the term's measured cost from 0.26-0.40x the backbone's step on a loaded
machine to nothing measurable; docs/speed.md).

Why prototypes instead of in-batch pairs: with in-batch negatives, two examples of the same
scenario form a "negative" pair that is in fact positive (false negatives). Against the S
prototypes the positive of example i is exactly m_{s_i} and every other prototype is a true
negative. This is our reconstruction (see docs/midpg.md), not the paper's stated text.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from midpg_jax.errors import ConfigError

ESTIMATORS = ('infonce', 'jsd', 'mine', 'none')
SKETCH_SEED = 20230926  # fixed: the sketch is part of the estimator, not a trained parameter
# Below this RMS entry of M a sketch counts as "small": the critic is linear there, so its gradient
# reaches Q and B even at M = 0 (the identity initialisation), and is bounded by 1 / floor.
SKETCH_FLOOR = 1e-2


def fixed_sketch(layer: int, kind: int, shape: tuple[int, int]) -> np.ndarray:
  """A fixed random (K, d) matrix of rows with unit expected norm (numpy: the same in the torch
  reference). kind 0 = u (d_in), 1 = v (d_out), 2 = projection of z (d_z). Then
  E[(u^T M v)^2] = mean(M ** 2): a sketch entry is on the scale of one entry of M."""
  rng = np.random.default_rng([SKETCH_SEED, layer, kind])
  return (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)


def critic_scores(queries: list, prototypes: list, temperature: float) -> jax.Array:
  """Per-layer cosine critic averaged over layers, / temperature: (N_q, S).

  queries[l] (N_q, K): the fixed projection of z; prototypes[l] (S, K): the scenarios' sketches of
  M_l. The prototypes' norm has a floor (SKETCH_FLOOR per entry), so a zero M scores 0 against
  every query with a finite, non-zero gradient instead of a 0/0.
  """
  total = 0.0
  for q, m in zip(queries, prototypes):
    q = q * jax.lax.rsqrt(jnp.sum(q * q, axis=-1, keepdims=True) + 1e-12)
    floor = SKETCH_FLOOR ** 2 * m.shape[-1]
    m = m * jax.lax.rsqrt(jnp.sum(m * m, axis=-1, keepdims=True) + floor)
    total = total + q @ m.T
  return total / (len(queries) * temperature)


def _masked(scores, present):
  return jnp.where(present[None, :], scores, -jnp.inf)


def _weights(scores, weights):
  return (jnp.ones(scores.shape[:1], scores.dtype) if weights is None
          else jnp.asarray(weights, scores.dtype))


def infonce(scores: jax.Array, scenario: jax.Array, present: jax.Array,
            weights: jax.Array | None = None) -> jax.Array:
  """InfoNCE (van den Oord et al. 2018): log K - CE of picking the true prototype among K.

  Equals 0 when all prototypes score alike and approaches log K (K = prototypes present) when
  the true one dominates.
  """
  w = _weights(scores, weights)
  masked = _masked(scores, present)
  log_probs = jax.nn.log_softmax(masked, axis=-1)
  true_log_prob = jnp.take_along_axis(log_probs, scenario[:, None], axis=-1)[:, 0]
  num_present = jnp.sum(present.astype(jnp.float32))
  return jnp.log(num_present) + jnp.sum(w * true_log_prob) / jnp.sum(w)


def _neg_mask(scenario, present, num_scenarios):
  onehot = jax.nn.one_hot(scenario, num_scenarios, dtype=bool)
  return (~onehot) & present[None, :], onehot


def jsd(scores: jax.Array, scenario: jax.Array, present: jax.Array,
        weights: jax.Array | None = None) -> jax.Array:
  """Jensen-Shannon bound of Deep InfoMax (Hjelm et al. 2019): E_P[-sp(-T)] - E_N[sp(T)].

  Negatives are every (example, other present prototype) pair.
  """
  w = _weights(scores, weights)[:, None]
  neg, pos = _neg_mask(scenario, present, scores.shape[1])
  pos_term = jnp.sum(jnp.where(pos, -w * jax.nn.softplus(-scores), 0.0)) / jnp.sum(w)
  neg_count = jnp.maximum(jnp.sum(jnp.where(neg, w, 0.0)), 1)
  neg_term = jnp.sum(jnp.where(neg, w * jax.nn.softplus(scores), 0.0)) / neg_count
  return pos_term - neg_term


def mine(scores: jax.Array, scenario: jax.Array, present: jax.Array,
         weights: jax.Array | None = None) -> jax.Array:
  """Donsker-Varadhan bound used by MINE (Belghazi et al. 2018): E_P[T] - log E_N[e^T].

  Negatives (samples of the product of marginals) are the shuffled pairs of each example with
  every other present prototype. Returns 0 when there is no negative (one scenario).
  """
  w = _weights(scores, weights)[:, None]
  neg, pos = _neg_mask(scenario, present, scores.shape[1])
  neg = neg & (w > 0)
  pos_term = jnp.sum(jnp.where(pos, w * scores, 0.0)) / jnp.sum(w)
  neg_weight = jnp.sum(jnp.where(neg, w, 0.0))
  log_w = jnp.log(jnp.where(neg, w, 1.0))
  log_mean_exp = (jax.nn.logsumexp(jnp.where(neg, scores + log_w, -jnp.inf))
                  - jnp.log(jnp.maximum(neg_weight, 1)))
  return jnp.where(neg_weight > 0, pos_term - log_mean_exp, 0.0)


def mi_lower_bound(name: str, scores, scenario, present, weights=None) -> jax.Array:
  if name == 'infonce':
    return infonce(scores, scenario, present, weights)
  if name == 'jsd':
    return jsd(scores, scenario, present, weights)
  if name == 'mine':
    return mine(scores, scenario, present, weights)
  if name == 'none':
    return jnp.zeros((), scores.dtype)
  raise ConfigError(f'unknown MI estimator {name!r}; choose one of {ESTIMATORS}')

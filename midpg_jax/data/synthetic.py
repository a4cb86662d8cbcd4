"""The built-in synthetic multi-scenario CVR dataset, with known true conversion probabilities.

Why synthetic data: real CVR data never tells how good the best possible model is. Here the true
probability of every example is stored, so each evaluation reports the *oracle* AUC and logloss
(what a model that knew the truth would score) beside the model's, and the gap between them is
what a model can still win.

The generating process (deterministic from `seed`, vectorised numpy):

* Scenario `s` drawn with imbalanced weights (default 45/30/20/5 %: one small scenario).
* Categorical fields with Zipf-distributed ids (exponent `zipf_a`), vocabularies from 10 to 100k.
  In the `shifted_fields`, each scenario maps popularity ranks to ids through its own permutation
  half of the time, so the id distributions overlap but shift by scenario.
* Dense features: Gaussian, with a scenario-dependent mean.
* The true logit is built from a *different family* than any model in the zoo, so no model is
  favoured by construction:
    shared part   = per-id random effects of every field
                  + hashed pairwise feature crosses (effect looked up by a hash of the id pair)
                  + a small random tanh network of the dense features and two coarse fields;
    specific part = per scenario: its own random effects on `specific_fields`, its own hashed
                  cross, and its own random tanh network of the dense features;
    logit         = shared + heterogeneity * specific + bias(s).
  `heterogeneity` = 0 makes the scenarios identical given the features (one shared bias); at 1 each
  scenario gets its own specific part and its own base rate (`base_rates`, 1-10 %).
* label ~ Bernoulli(sigmoid(logit)); `prob` = sigmoid(logit) is stored.
* `min_count` (default 1 = off): ids seen fewer times in the training split become id 0 (OOV).
"""

from __future__ import annotations

import numpy as np

from midpg_jax.data.schema import Columns, FeatureSpec
from midpg_jax.errors import ConfigError

_HASH_BUCKETS = 10_007  # distinct values a hashed cross takes: crosses are learnable, not unique


def _zipf_ranks(rng: np.random.Generator, n: int, vocab: int, a: float) -> np.ndarray:
  """Ranks in [0, vocab-1) with P(rank=k) proportional to (k+1)^-a (inverse-CDF sampling)."""
  p = np.arange(1, vocab, dtype=np.float64) ** (-a)
  cdf = np.cumsum(p)
  cdf /= cdf[-1]
  return np.minimum(np.searchsorted(cdf, rng.random(n)), vocab - 2)


def _random_net(rng: np.random.Generator, d_in: int, hidden: int):
  w1 = rng.normal(0, 1 / np.sqrt(d_in), (d_in, hidden))
  b1 = rng.normal(0, 0.5, hidden)
  w2 = rng.normal(0, 1 / np.sqrt(hidden), hidden)
  return lambda x: np.tanh(x @ w1 + b1) @ w2


def _hash_pair(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
  h = (a.astype(np.uint64) * np.uint64(2654435761) + b.astype(np.uint64) * np.uint64(40503)
       + np.uint64(salt) * np.uint64(97)) % np.uint64(_HASH_BUCKETS)
  return h.astype(np.int64)


def _calibrate_bias(logit: np.ndarray, rate: float) -> float:
  """The constant c with mean(sigmoid(logit + c)) = rate, by bisection (monotone in c)."""
  lo, hi = -30.0, 30.0
  for _ in range(60):
    mid = (lo + hi) / 2
    if np.mean(1 / (1 + np.exp(-(logit + mid)))) < rate:
      lo = mid
    else:
      hi = mid
  return (lo + hi) / 2


def _threshold_rare_ids(splits: dict[str, Columns], min_count: int) -> None:
  """Ids seen fewer than `min_count` times in the training split become id 0 (OOV) in every split.

  The frequency threshold of real-data preparation (`prepare.py`'s `min_count`), for the built-in
  data: a model cannot memorise an id from one or two labels. `prob` (the oracle) is unchanged.
  """
  cat = splits['train']['cat']
  for f in range(cat.shape[1]):
    counts = np.bincount(cat[:, f])
    for cols in splits.values():
      ids = cols['cat'][:, f]
      seen = ids < len(counts)
      rare = ~seen
      rare[seen] = counts[ids[seen]] < min_count
      cols['cat'][rare, f] = 0


def generate(cfg) -> tuple[FeatureSpec, dict[str, Columns]]:
  """Generates the dataset described by `cfg` (a ConfigDict; see configs/default.py `data`).

  Returns the schema and the splits {'train', 'validation', 'test'}.
  """
  vocab_sizes = tuple(int(v) for v in cfg.vocab_sizes)
  num_fields = len(vocab_sizes)
  num_scen = int(cfg.num_scenarios)
  weights = np.asarray(cfg.scenario_weights, np.float64)
  base_rates = np.asarray(cfg.base_rates, np.float64)
  if len(weights) != num_scen or len(base_rates) != num_scen:
    raise ConfigError(f'data.scenario_weights and data.base_rates need {num_scen} values '
                     f'(data.num_scenarios), got {len(weights)} and {len(base_rates)}')
  if not ((base_rates > 0) & (base_rates < 1)).all():
    raise ConfigError(f'data.base_rates must lie in (0, 1), got {tuple(base_rates)}')
  if cfg.heterogeneity < 0:
    raise ConfigError(f'data.heterogeneity must be >= 0, got {cfg.heterogeneity}')
  for f in list(cfg.shifted_fields) + list(cfg.specific_fields):
    if not 0 <= f < num_fields:
      raise ConfigError(f'data field index {f} is outside [0, {num_fields})')

  sizes = [int(cfg.num_train), int(cfg.num_val), int(cfg.num_test)]
  n = sum(sizes)
  # One generator for the world (effects, networks), one for the sample: changing the sample
  # size does not change the function being learnt.
  world = np.random.default_rng([int(cfg.seed), 0])
  sample = np.random.default_rng([int(cfg.seed), 1])

  scenario = sample.choice(num_scen, size=n, p=weights / weights.sum()).astype(np.int32)

  # --- features --------------------------------------------------------------------------
  cat = np.empty((n, num_fields), np.int32)
  for f, vocab in enumerate(vocab_sizes):
    ranks = _zipf_ranks(sample, n, vocab, float(cfg.zipf_a))
    shared_perm = world.permutation(vocab - 1) + 1  # ids 1..vocab-1; 0 stays OOV
    ids = shared_perm[ranks]
    if f in cfg.shifted_fields:
      own = sample.random(n) < 0.5
      for s in range(num_scen):
        perm_s = world.permutation(vocab - 1) + 1
        sel = own & (scenario == s)
        ids[sel] = perm_s[ranks[sel]]
    cat[:, f] = ids
  dense_shift = world.normal(0, 0.5, (num_scen, int(cfg.num_dense)))
  dense = (sample.normal(0, 1, (n, int(cfg.num_dense))) + dense_shift[scenario]).astype(np.float32)

  # --- true logit --------------------------------------------------------------------------
  field_scale = float(cfg.field_effect_scale)
  shared = np.zeros(n)
  for f, vocab in enumerate(vocab_sizes):
    shared += world.normal(0, field_scale, vocab)[cat[:, f]]
  cross_pairs = [(0, 3), (1, 4), (2, 5)][: max(0, num_fields - 3)]
  for k, (a, b) in enumerate(cross_pairs):
    shared += world.normal(0, float(cfg.cross_effect_scale), _HASH_BUCKETS)[
        _hash_pair(cat[:, a], cat[:, b], k)]
  coarse = [f for f, v in enumerate(vocab_sizes) if v <= 64][:2]
  coarse_x = [world.normal(0, 1, (vocab_sizes[f], 2))[cat[:, f]] for f in coarse]
  net_in = np.concatenate([dense] + coarse_x, axis=1)
  shared += float(cfg.net_scale) * _random_net(world, net_in.shape[1], 16)(net_in)

  specific = np.zeros(n)
  for s in range(num_scen):
    rows = scenario == s
    spec_s = np.zeros(rows.sum())
    for f in cfg.specific_fields:
      spec_s += world.normal(0, field_scale, vocab_sizes[f])[cat[rows, f]]
    a, b = cross_pairs[s % len(cross_pairs)] if cross_pairs else (0, 0)
    spec_s += world.normal(0, float(cfg.cross_effect_scale), _HASH_BUCKETS)[
        _hash_pair(cat[rows, a], cat[rows, b], 100 + s)]
    spec_s += float(cfg.net_scale) * _random_net(world, net_in.shape[1], 16)(net_in[rows])
    specific[rows] = spec_s

  h = float(cfg.heterogeneity)
  core = shared + h * specific
  common_rate = float(np.dot(weights / weights.sum(), base_rates))
  global_bias = _calibrate_bias(core, common_rate)
  t = min(h, 1.0)
  bias = np.array([global_bias + t * (_calibrate_bias(core[scenario == s], base_rates[s])
                                      - global_bias) if (scenario == s).any() else global_bias
                   for s in range(num_scen)])
  logit = core + bias[scenario]
  prob = 1 / (1 + np.exp(-logit))
  label = (sample.random(n) < prob).astype(np.float32)

  columns = {'cat': cat, 'dense': dense, 'scenario': scenario, 'label': label,
             'prob': prob.astype(np.float32)}
  order = sample.permutation(n)
  bounds = np.cumsum([0] + sizes)
  splits = {}
  for name, lo, hi in zip(('train', 'validation', 'test'), bounds[:-1], bounds[1:]):
    idx = np.sort(order[lo:hi])
    splits[name] = {k: v[idx] for k, v in columns.items()}

  min_count = int(cfg.get('min_count', 1))
  if min_count > 1:
    _threshold_rare_ids(splits, min_count)

  return feature_spec(cfg), splits


def feature_spec(cfg) -> FeatureSpec:
  """The schema of the dataset `cfg` describes, without generating it (ahead-of-time compiles
  of configs with vocabularies too large to generate here, midpg_jax/aot)."""
  return FeatureSpec(
      cat_names=tuple(f'c{f}' for f in range(len(cfg.vocab_sizes))),
      cat_vocab_sizes=tuple(int(v) for v in cfg.vocab_sizes),
      dense_names=tuple(f'd{j}' for j in range(int(cfg.num_dense))),
      scenario_names=tuple(f'scenario_{s}' for s in range(int(cfg.num_scenarios))),
  )

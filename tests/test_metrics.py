import math

import numpy as np
import pytest

from midpg_jax import metrics


def brute_force_auc(y, s):
  pos, neg = s[y == 1], s[y == 0]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def test_auc_hand_computed_with_ties():
  # Positives scored 0.8, 0.5; negatives 0.5, 0.2, 0.5.
  # Pairs: (0.8 beats all 3) = 3; (0.5 vs 0.5, 0.2, 0.5) = 0.5 + 1 + 0.5 = 2 -> 5 / 6.
  y = np.array([1, 1, 0, 0, 0])
  s = np.array([0.8, 0.5, 0.5, 0.2, 0.5])
  assert metrics.auc(y, s) == pytest.approx(5 / 6, abs=1e-12)


def test_auc_all_tied_is_half_and_perfect_is_one():
  assert metrics.auc(np.array([0, 1, 0, 1]), np.zeros(4)) == 0.5
  assert metrics.auc(np.array([0, 0, 1, 1]), np.array([.1, .2, .3, .4])) == 1.0
  assert metrics.auc(np.array([1, 1, 0, 0]), np.array([.1, .2, .3, .4])) == 0.0


def test_auc_matches_brute_force_on_random_ties():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 300)
  s = rng.integers(0, 7, 300) / 7.0  # heavy ties
  assert metrics.auc(y, s) == pytest.approx(brute_force_auc(y, s), abs=1e-12)


def test_auc_one_class_is_undefined_not_error():
  assert math.isnan(metrics.auc(np.zeros(5), np.linspace(0, 1, 5)))
  result = metrics.evaluate_predictions(
      np.array([0, 0, 1, 0]), np.array([.1, .2, .9, .3]), np.array([0, 0, 1, 1]), ['a', 'b'])
  assert math.isnan(result['a']['auc'])
  assert result['b']['auc'] == 1.0
  assert result['overall']['auc'] == 1.0
  assert 'undef' in metrics.format_table(result)


def test_logloss_and_calibration():
  y = np.array([1, 0, 0, 0])
  p = np.array([0.5, 0.5, 0.5, 0.5])
  r = metrics.evaluate_predictions(y, p, np.zeros(4, int), ['only'])
  assert r['overall']['logloss'] == pytest.approx(math.log(2))
  assert r['overall']['calibration'] == pytest.approx(0.5 / 0.25)
  assert r['overall']['count'] == 4 and r['overall']['positives'] == 1


def test_oracle_columns_and_nan_predictions_rejected():
  y = np.array([1, 0, 1, 0])
  r = metrics.evaluate_predictions(y, np.array([.6, .4, .3, .7]), np.zeros(4, int), ['s'],
                                   oracle_probs=np.array([.9, .1, .8, .2]))
  assert r['overall']['oracle_auc'] == 1.0
  assert r['overall']['auc_gap'] == pytest.approx(1.0 - r['overall']['auc'])
  with pytest.raises(ValueError, match='NaN'):
    metrics.evaluate_predictions(y, np.array([.1, np.nan, .2, .3]), np.zeros(4, int), ['s'])

"""Predicting a whole split and scoring it: the path shared by training, eval.py and benchmarks."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from midpg_jax import metrics
from midpg_jax.data import pipeline
from midpg_jax.data.schema import FeatureSpec, num_rows
from midpg_jax.train_state import model_inputs


def predict(predict_fn: Callable, state, columns: dict, batch_size: int) -> np.ndarray:
  """Predicted probabilities (N,) for every row of `columns`, each exactly once, in order.

  Device results are fetched once at the end so the host never waits inside the loop.
  """
  outputs, weights = [], []
  for batch in pipeline.eval_batches(columns, batch_size):
    outputs.append(predict_fn(state, model_inputs(batch)))
    weights.append(batch['weight'])
  probs = np.concatenate([np.asarray(o) for o in jax.device_get(outputs)])
  keep = np.concatenate(weights) > 0
  probs = probs[keep]
  assert len(probs) == num_rows(columns)
  return probs


def evaluate(predict_fn: Callable, state, columns: dict, spec: FeatureSpec,
             batch_size: int) -> tuple[dict, np.ndarray]:
  """(metrics per scenario and overall, predictions) for one split."""
  probs = predict(predict_fn, state, columns, batch_size)
  result = metrics.evaluate_predictions(columns['label'], probs, columns['scenario'],
                                        spec.scenario_names, columns.get('prob'))
  return result, probs

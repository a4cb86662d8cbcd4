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


def evaluate_checkpoint(config, workdir: str, split: str = 'test', kind: str = 'best'):
  """Restores the `kind` checkpoint of `workdir` and scores `split`.

  Returns (metrics, probs, dataset, meta). Raises CheckpointError when the workdir has none.
  """
  # Imported here: the trainer imports this module.
  from midpg_jax.checkpoint import Checkpointer, CheckpointError
  from midpg_jax.trainer import setup
  from midpg_jax.train_state import make_predict_step
  import os
  if not os.path.isdir(os.path.join(workdir, 'checkpoints', kind)):
    raise CheckpointError(f'no {kind} checkpoint in {os.path.abspath(workdir)}/checkpoints/{kind}:'
                          f' train first (python train.py --config ... --workdir {workdir})')
  dataset, model, _, state, _ = setup(config)
  if split not in dataset.splits:
    raise ValueError(f'unknown split {split!r}; this dataset has {sorted(dataset.splits)}')
  checkpointer = Checkpointer(workdir, create=False)
  try:
    state, meta = checkpointer.restore(kind, state)
  finally:
    checkpointer.close()
  result, probs = evaluate(jax.jit(make_predict_step(model)), state, dataset.splits[split],
                           dataset.spec, int(config.train.eval_batch_size))
  return result, probs, dataset, meta

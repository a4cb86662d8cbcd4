"""Predicting a whole split and scoring it: the path shared by training, eval.py and benchmarks."""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from midpg_jax import checkpoint, metrics
from midpg_jax.build import setup, state_shardings
from midpg_jax.checkpoint import Checkpointer
from midpg_jax.data import pipeline
from midpg_jax.data.schema import FeatureSpec, check_same_encoding, load_spec, num_rows
from midpg_jax.errors import ConfigError
from midpg_jax.partitioning import Partitioner
from midpg_jax.train_state import make_predict_step, model_inputs


_ROW = '__row__'  # the original row index, carried through the batches to place predictions


class _RowIndex:
  """A column whose row i is i, without storing it (`take_rows` only indexes columns)."""

  def __getitem__(self, index):
    return np.asarray(index, dtype=np.int64)


def predict(predict_fn: Callable, state, columns: dict, batch_size: int,
            partitioner: Partitioner | None = None) -> np.ndarray:
  """Predicted probabilities (N,) for every row of `columns`, each exactly once, in order.

  With a `partitioner`, `batch_size` is the global batch (rounded up to a multiple of the mesh's
  data axis); each process predicts its contiguous share of the split (padded batches of weight
  0, the same number on every process), and the global predictions, weights and row indices are
  gathered on every process (`process_allgather`): padding is dropped by weight and every row must
  come back exactly once. Device results are fetched once at the end so the host never waits
  inside the loop. `predict_fn(state, batch)` is the jitted step (`Partitioner.jit_predict_step`).
  """
  n = num_rows(columns)
  if partitioner is None:  # plain jit on the default device
    outputs, weights = [], []
    for batch in pipeline.eval_batches(columns, batch_size):
      outputs.append(predict_fn(state, model_inputs(batch)))
      weights.append(batch['weight'])
    probs = np.concatenate([np.asarray(o) for o in jax.device_get(outputs)])
    probs = probs[np.concatenate(weights) > 0]
    assert len(probs) == n
    return probs

  local_bs = partitioner.local_batch_size(partitioner.eval_batch_size(batch_size),
                                          'eval batch size')
  cols = dict(columns)
  cols[_ROW] = _RowIndex()
  outputs, weights, rows = [], [], []
  for batch in pipeline.eval_batches(cols, local_bs, partitioner.data_shard_index,
                                     partitioner.data_shard_count):
    outputs.append(predict_fn(state, partitioner.shard_batch(model_inputs(batch))))
    weights.append(batch['weight'])
    rows.append(batch[_ROW])
  if jax.process_count() == 1:  # the global batches are this process's batches
    probs = np.concatenate([np.asarray(o) for o in jax.device_get(outputs)])
    weight, row = np.concatenate(weights), np.concatenate(rows)
  else:
    gathered = multihost_utils.process_allgather(
        (outputs, [partitioner.shard_batch(w) for w in weights],
         [partitioner.shard_batch(r.astype(np.int32)) for r in rows]), tiled=True)
    probs, weight, row = (np.concatenate(part) for part in gathered)
  keep = weight > 0
  row, kept = row[keep], probs[keep]
  counts = np.bincount(row, minlength=n)
  if len(counts) != n or not np.all(counts == 1):
    raise RuntimeError(f'evaluation saw {int(np.sum(counts > 0))} distinct rows of {n}, '
                       f'{int(np.sum(counts > 1))} more than once')
  out = np.empty(n, kept.dtype)
  out[row] = kept
  return out


def evaluate(predict_fn: Callable, state, columns: dict, spec: FeatureSpec,
             batch_size: int, partitioner: Partitioner | None = None) -> tuple[dict, np.ndarray]:
  """(metrics per scenario and overall, predictions) for one split; the same on every process."""
  probs = predict(predict_fn, state, columns, batch_size, partitioner)
  result = metrics.evaluate_predictions(columns['label'], probs, columns['scenario'],
                                        spec.scenario_names, columns.get('prob'))
  return result, probs


def check_trained_on(workdir: str, dataset, name: str) -> None:
  """DataError when `dataset` is not encoded as the data the run in `workdir` was trained on
  (prepared again from other files since: another encoder fingerprint)."""
  saved = os.path.join(workdir, 'feature_spec.json')
  if os.path.isfile(saved):
    check_same_encoding(load_spec(saved), dataset.spec, f'the run in {workdir}',
                        f'dataset {name!r}')


def evaluate_checkpoint(config, workdir: str, split: str = 'test', kind: str = 'best',
                        partitioner: Partitioner | None = None):
  """Restores the `kind` checkpoint of `workdir` onto the mesh of `config.mesh` (whatever mesh
  wrote it) and scores `split`. `config` must be the run's (eval.py resolves it from the run's
  config.json, `run_config.resolve`).

  Returns (metrics, probs, dataset, meta); meta is the checkpoint's loop record plus
  'checkpoint_step', the step of the restored state. Raises CheckpointError when there is none.
  """
  checkpoint.require(workdir, kind)
  partitioner = partitioner or Partitioner.from_config(config)
  # Nothing is initialised: the checkpoint is read straight into this mesh's shardings.
  dataset, model, _, state, _ = setup(config, partitioner=partitioner, abstract=True)
  check_trained_on(workdir, dataset, config.data.name)
  if split not in dataset.splits:
    raise ConfigError(f'unknown split {split!r}; this dataset has {sorted(dataset.splits)}')
  checkpointer = Checkpointer(workdir, create=False)
  try:
    step = checkpointer.latest_step(kind)
    state, meta = checkpointer.restore(kind, state, weights_only=True)
  finally:
    checkpointer.close()
  meta['checkpoint_step'] = step
  predict_fn = partitioner.jit_predict_step(make_predict_step(model), state_shardings(state))
  result, probs = evaluate(predict_fn, state, dataset.splits[split], dataset.spec,
                           int(config.train.eval_batch_size), partitioner)
  return result, probs, dataset, meta

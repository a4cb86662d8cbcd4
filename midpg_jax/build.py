"""Builds what training and evaluation share: data, model, optimizer, initial state.

Used by the trainer, by `evaluation.evaluate_checkpoint` (eval.py) and by the benchmarks; it
depends on neither, so evaluation does not import the trainer.
"""

from __future__ import annotations

import jax
import numpy as np

from midpg_jax.data import Dataset, load_dataset, pipeline
from midpg_jax.errors import ConfigError
from midpg_jax.models import build_model
from midpg_jax.partitioning import Partitioner
from midpg_jax.train_state import (OPTIMIZERS, SCHEDULES, create_train_state, make_optimizer,
                                   model_inputs)


def validate_config(config) -> None:
  """The train.* values a user sets, checked before anything is loaded or written."""
  t = config.train
  for key in ('batch_size', 'eval_batch_size', 'num_epochs', 'log_every_steps'):
    if int(t[key]) <= 0:
      raise ConfigError(f'train.{key} must be positive, got {t[key]}')
  for key in ('early_stop_patience', 'eval_every_steps', 'prefetch'):
    if int(t[key]) < 0:
      raise ConfigError(f'train.{key} must be >= 0, got {t[key]}')
  if not float(t.learning_rate) > 0:
    raise ConfigError(f'train.learning_rate must be positive, got {t.learning_rate}')
  if t.optimizer not in OPTIMIZERS:
    raise ConfigError(f'unknown train.optimizer {t.optimizer!r}; choose one of {OPTIMIZERS}')
  if t.schedule not in SCHEDULES:
    raise ConfigError(f'unknown train.schedule {t.schedule!r}; choose one of {SCHEDULES}')


def _build_model(config, dataset: Dataset):
  # The mean training label lets a model start at the base rate (logistic's output bias).
  return build_model(config.model, dataset.spec,
                     base_rate=float(np.mean(dataset.splits['train']['label'])))


def setup(config, dataset: Dataset | None = None, partitioner: Partitioner | None = None,
          abstract: bool = False):
  """(dataset, model, tx, state, steps_per_epoch) for `config`.

  The state is created directly in its shards on `partitioner`'s mesh (default: the mesh of
  `config.mesh`); `state_shardings(state)` gives its shardings. `abstract=True` returns the state
  as jax.ShapeDtypeStructs carrying those shardings, computing nothing (a restore target).
  """
  validate_config(config)
  partitioner = partitioner or Partitioner.from_config(config)
  dataset = dataset or load_dataset(config.data)
  model = _build_model(config, dataset)
  n_train = len(dataset.splits['train']['label'])
  steps_per_epoch = pipeline.steps_per_epoch(n_train, int(config.train.batch_size))
  if steps_per_epoch == 0:
    raise ConfigError(f'the training split has {n_train} rows, fewer than one batch of '
                      f'train.batch_size={config.train.batch_size}')
  tx = make_optimizer(config.train, steps_per_epoch * int(config.train.num_epochs))
  sample = model_inputs(next(pipeline.eval_batches(dataset.splits['train'], 2)))
  seed = int(config.seed)
  init_fn = lambda: create_train_state(model, tx, sample, jax.random.key(seed))
  if abstract:
    shapes = jax.eval_shape(init_fn)
    state = partitioner.abstract_state(shapes, partitioner.state_shardings(shapes))
  else:
    state, _ = partitioner.create_state(init_fn)
  return dataset, model, tx, state, steps_per_epoch


def state_shardings(state):
  return jax.tree_util.tree_map(lambda x: x.sharding, state)

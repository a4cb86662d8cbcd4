"""The train loop: `train_and_evaluate(config, workdir)`.

Trains, evaluates on validation every epoch (or every `train.eval_every_steps`), early-stops on
validation AUC, keeps the latest and the best checkpoint, resumes from the workdir after an
interruption (reaching the same result as an uninterrupted run with the same seed), and finally
scores the best state on the test split.

Distribution (midpg_jax/partitioning.py): the state lives sharded on the (data, model) mesh of
`config.mesh`, each process loads only its rows of every global batch of `train.batch_size`
examples, and only process 0 writes files, logs and shows the progress bar. One device is the
1 x 1 mesh: the same code.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from typing import Iterator

import jax
import numpy as np
from tqdm.auto import tqdm

from midpg_jax import evaluation, metrics
from midpg_jax.checkpoint import Checkpointer
from midpg_jax.errors import NonFiniteLossError
from midpg_jax.data import Dataset, load_dataset, pipeline
from midpg_jax.models import build_model
from midpg_jax.partitioning import Partitioner, is_main_process
from midpg_jax.train_state import (count_params, create_train_state, make_optimizer,
                                   make_predict_step, make_train_step, model_inputs)

log = logging.getLogger(__name__)


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs `iterator` (host batch assembly + device transfer) in a thread, `size` items ahead."""
  if size <= 0:
    yield from iterator
    return
  q: queue.Queue = queue.Queue(maxsize=size)
  done = object()

  def worker():
    try:
      for item in iterator:
        q.put(item)
    except BaseException as e:  # re-raised in the consumer
      q.put(e)
    q.put(done)

  threading.Thread(target=worker, daemon=True).start()
  while True:
    item = q.get()
    if item is done:
      return
    if isinstance(item, BaseException):
      raise item
    yield item


def validate_config(config) -> None:
  t = config.train
  for key in ('batch_size', 'eval_batch_size', 'num_epochs'):
    if int(t[key]) <= 0:
      raise ValueError(f'train.{key} must be positive, got {t[key]}')
  if int(t.early_stop_patience) < 0:
    raise ValueError(f'train.early_stop_patience must be >= 0, got {t.early_stop_patience}')
  if float(config.model.get('mi_weight', 0.0)) < 0:
    raise ValueError(f'model.mi_weight must be >= 0, got {config.model.mi_weight}')


class _JsonlWriter:
  def __init__(self, path: str, enabled: bool = True):
    self.path, self.enabled = path, enabled

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record, default=float) + '\n')


def setup(config, dataset: Dataset | None = None, partitioner: Partitioner | None = None,
          abstract: bool = False):
  """Builds what training and evaluation share: data, model, optimizer, initial state, steps.

  The state is created directly in its shards on `partitioner`'s mesh (default: the mesh of
  `config.mesh`); `state_shardings(state)` gives its shardings. `abstract=True` returns the state
  as jax.ShapeDtypeStructs carrying those shardings, computing nothing (a restore target).
  """
  validate_config(config)
  partitioner = partitioner or Partitioner.from_config(config)
  dataset = dataset or load_dataset(config.data)
  model = build_model(config.model, dataset.spec, float(np.mean(dataset.splits['train']['label'])))
  n_train = len(dataset.splits['train']['label'])
  steps_per_epoch = pipeline.steps_per_epoch(n_train, int(config.train.batch_size))
  if steps_per_epoch == 0:
    raise ValueError(f'the training split has {n_train} rows, fewer than one batch of '
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


def train_and_evaluate(config, workdir: str, stop_after_steps: int | None = None,
                       partitioner: Partitioner | None = None) -> dict:
  """Trains `config` in `workdir`; returns {'validation': metrics, 'test': metrics, ...}.

  `stop_after_steps` ends the run early, as an interruption would (used to test resuming).
  `partitioner` defaults to the mesh of `config.mesh` over all devices of all processes.
  """
  partitioner = partitioner or Partitioner.from_config(config)
  validate_config(config)
  partitioner.local_batch_size(int(config.train.batch_size))  # must divide by the data axis
  dataset, model, tx, state, steps_per_epoch = setup(config, partitioner=partitioner)  # validates
  main = is_main_process()
  os.makedirs(workdir, exist_ok=True)
  spec, splits = dataset.spec, dataset.splits
  tcfg = config.train
  batch_size, seed = int(tcfg.batch_size), int(config.seed)
  eval_every = int(tcfg.eval_every_steps) or steps_per_epoch
  total_steps = steps_per_epoch * int(tcfg.num_epochs)
  if main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=1))
    with open(os.path.join(workdir, 'feature_spec.json'), 'w') as f:
      f.write(spec.to_json())

  shardings = state_shardings(state)
  layout = partitioner.describe(state.params, shardings.params)
  log.info('%s', layout)
  if main:
    print(layout)

  checkpointer = Checkpointer(workdir)
  meta = {'epoch': 0, 'step_in_epoch': 0, 'best_auc': -math.inf, 'best_step': -1,
          'evals_without_improvement': 0, 'stopped_early': False}
  if checkpointer.latest_step('latest') is not None:
    # Restored onto this run's mesh, whatever mesh wrote it.
    state, meta = checkpointer.restore('latest', state)
    log.info('resumed from step %d (epoch %d)', int(state.step), meta['epoch'])
    if main:
      print(f'Resuming from {checkpointer.directory}/latest at step {int(state.step)}')

  n_params = count_params(state.params)
  train_step = partitioner.jit_train_step(
      make_train_step(model, tx, float(config.model.get('mi_weight', 0.0))), shardings,
      donate_state=bool(tcfg.get('sparse_embeddings', False)))
  predict_step = partitioner.jit_predict_step(make_predict_step(model), shardings)
  jsonl = _JsonlWriter(os.path.join(workdir, 'metrics.jsonl'), enabled=main)
  if main:
    print(f'model {config.model.name}: {n_params:,} parameters; {len(splits["train"]["label"]):,} '
          f'training rows, {steps_per_epoch} steps/epoch, {total_steps} steps at most')

  def run_eval(step: int, train_metrics: dict) -> dict:
    result, _ = evaluation.evaluate(predict_step, state, splits['validation'], spec,
                                    int(tcfg.eval_batch_size), partitioner)
    jsonl.write({'step': step, 'epoch': meta['epoch'], 'split': 'validation',
                 **{f'train/{k}': v for k, v in train_metrics.items()},
                 **metrics.flat_metrics(result)})
    return result

  pending: list[dict] = []  # device-side step metrics since the last log
  window_start, window_examples = time.perf_counter(), 0
  # Training throughput for the summary: examples and seconds of the step loop only, from the
  # end of the first (compiling) step of this run, evaluation time excluded.
  timed = {'examples': 0, 'seconds': 0.0, 'since': None}
  step = int(state.step)
  progress = tqdm(total=total_steps, initial=step, desc='train', unit='step',
                  dynamic_ncols=True, disable=not (tcfg.progress_bar and main))
  last_train_metrics: dict = {}

  def fetch_pending() -> dict:
    nonlocal pending
    if not pending:
      return {}
    fetched = jax.device_get(pending)  # replicated: every process reads its own copy
    pending = []
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    if not all(math.isfinite(v) for v in means.values()):
      raise NonFiniteLossError(
          f'training loss became non-finite ({means}) before step {step}; stopped. The last good '
          f'checkpoint (step {checkpointer.latest_step("latest")}) is kept in '
          f'{checkpointer.directory}. Lower train.learning_rate or set train.grad_clip_norm.')
    return means

  try:
    while meta['epoch'] < int(tcfg.num_epochs) and not meta['stopped_early']:
      epoch = meta['epoch']
      # This process's rows of every global batch (all of them on one process).
      batches = pipeline.train_batches(splits['train'], batch_size, seed, epoch,
                                       start_step=meta['step_in_epoch'],
                                       process_index=partitioner.data_shard_index,
                                       process_count=partitioner.data_shard_count)
      device_batches = prefetch((partitioner.shard_batch(model_inputs(b)) for b in batches),
                                int(tcfg.prefetch))
      for batch in device_batches:
        state, step_metrics = train_step(state, batch)
        pending.append(step_metrics)
        if timed['since'] is None:
          timed['since'] = time.perf_counter()
        else:
          timed['examples'] += batch_size
        step += 1
        meta['step_in_epoch'] += 1
        window_examples += batch_size
        progress.update(1)
        if step % int(tcfg.log_every_steps) == 0:
          last_train_metrics = fetch_pending()
          now = time.perf_counter()
          rate = window_examples / max(now - window_start, 1e-9)
          window_start, window_examples = now, 0
          progress.set_postfix(loss=f'{last_train_metrics["loss"]:.4f}', ex_s=f'{rate:,.0f}')
        end_of_epoch = meta['step_in_epoch'] == steps_per_epoch
        if end_of_epoch:
          meta['epoch'], meta['step_in_epoch'] = epoch + 1, 0
        if step % eval_every == 0 or end_of_epoch:
          last_train_metrics = fetch_pending() or last_train_metrics
          jax.block_until_ready(state.step)
          timed['seconds'] += time.perf_counter() - timed['since']
          result = run_eval(step, last_train_metrics)
          timed['since'] = time.perf_counter()
          val_auc = result['overall']['auc']
          improved = val_auc > meta['best_auc']
          if improved:
            meta.update(best_auc=val_auc, best_step=step, evals_without_improvement=0)
            checkpointer.save('best', step, state, dict(meta))
          else:
            meta['evals_without_improvement'] += 1
            if (int(tcfg.early_stop_patience)
                and meta['evals_without_improvement'] >= int(tcfg.early_stop_patience)):
              meta['stopped_early'] = True
          checkpointer.save('latest', step, state, dict(meta))
          if main:
            progress.write(f'step {step} epoch {epoch + end_of_epoch}: validation AUC '
                           f'{val_auc:.4f} (best {meta["best_auc"]:.4f} at step '
                           f'{meta["best_step"]})'
                           + (' - early stop' if meta['stopped_early'] else ''))
          if meta['stopped_early'] or end_of_epoch:
            break
        if stop_after_steps is not None and step >= stop_after_steps:
          checkpointer.wait()
          return {'interrupted_at': step}
  finally:
    progress.close()
    checkpointer.wait()

  # Final: the best state on validation and test.
  best_state, _ = checkpointer.restore('best', state)
  checkpointer.close()
  summary = {'model': config.model.name, 'params': n_params, 'best_step': meta['best_step'],
             'train_examples_per_s': (timed['examples'] / timed['seconds'] if timed['seconds']
                                      else float('nan')),
             'steps': step}
  for split in ('validation', 'test'):
    result, _ = evaluation.evaluate(predict_step, best_state, splits[split], spec,
                                    int(tcfg.eval_batch_size), partitioner)
    summary[split] = result
    jsonl.write({'step': meta['best_step'], 'split': f'best/{split}',
                 **metrics.flat_metrics(result)})
  if main:
    with open(os.path.join(workdir, 'final_metrics.json'), 'w') as f:
      json.dump(summary, f, indent=1, default=float)
  return summary

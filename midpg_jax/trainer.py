"""The train loop: `train_and_evaluate(config, workdir)`.

Trains, evaluates on validation every epoch (or every `train.eval_every_steps`), early-stops on
validation AUC (on logloss where the AUC is undefined: a validation split of one class), keeps
the latest and the best checkpoint, resumes from the workdir after an interruption (reaching the
same result as an uninterrupted run with the same seed), and finally scores the best state on the
test split. It reads as its steps:

  setup_run -> restore_or_init -> train_epoch (each epoch; evaluate -> maybe_checkpoint at every
  evaluation) -> final_report

The loop's position and early-stopping record (`LoopState`) are checkpointed with the train state.

One trainer per workdir: each process holds an flock on `<workdir>/train.lock` (process i > 0 of a
multi-process run: `train.<i>.lock`, so the processes of one run never wait on each other while a
second run's processes all stop) for the whole run; a second trainer stops at once with an
InUseError naming the holder, and a trainer killed with kill -9 leaves no stale lock (the OS drops
it). A full disk or a read-only workdir is one line (`StorageError`); the run's files are written
to a temporary name and renamed, and checkpoints by orbax the same way, so what was there before
is kept and the run resumes once there is space. Resuming on data prepared again from other files
(another encoder fingerprint) is refused.

Distribution (midpg_jax/partitioning.py): the state lives sharded on the (data, model) mesh of
`config.mesh`, each process loads only its rows of every global batch of `train.batch_size`
examples, and only process 0 writes files, logs and shows the progress bar. One device is the
1 x 1 mesh: the same code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
from tqdm.auto import tqdm

from midpg_jax import evaluation, files, run_config
from midpg_jax.build import setup, state_shardings, validate_config  # noqa: F401 (re-exported)
from midpg_jax.checkpoint import Checkpointer
from midpg_jax.data import Dataset, pipeline
from midpg_jax.metrics_log import MetricsLog
from midpg_jax.models import mi_weight
from midpg_jax.partitioning import Partitioner, is_main_process, max_steps_in_flight
from midpg_jax.stepping import StepMetrics, Throughput, prefetch
from midpg_jax.train_state import (count_params, make_predict_step, make_train_step, model_inputs,
                                   with_hyperparams_of)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoopState:
  """Where the loop is and the early-stopping record; saved with every checkpoint.

  best_score is the validation AUC, or minus the validation logloss where the AUC is undefined
  (`selection_score`).
  """
  epoch: int = 0
  step_in_epoch: int = 0
  best_score: float = -math.inf
  best_step: int = -1
  evals_without_improvement: int = 0
  stopped_early: bool = False

  @classmethod
  def from_meta(cls, meta: dict) -> 'LoopState':
    meta = dict(meta)
    if 'best_auc' in meta:  # checkpoints written before best_score
      meta.setdefault('best_score', meta.pop('best_auc'))
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in meta.items() if k in names})

  def to_meta(self) -> dict:
    return dataclasses.asdict(self)


def selection_score(result: dict) -> tuple[str, float]:
  """(name, score) ranking checkpoints, higher is better: validation AUC, or -logloss when the AUC
  is undefined (every validation label the same). The same for every evaluation of a run."""
  overall = result['overall']
  if math.isfinite(overall['auc']):
    return 'AUC', float(overall['auc'])
  return 'logloss', -float(overall['logloss'])


@dataclasses.dataclass
class Run:
  """What one training run is made of (`setup_run`); nothing here changes while it trains."""
  config: Any
  workdir: str
  partitioner: Partitioner
  dataset: Dataset
  train_step: Callable
  predict_step: Callable
  checkpointer: Checkpointer
  log: MetricsLog
  steps_per_epoch: int
  total_steps: int
  eval_every: int
  n_params: int
  main: bool
  lock: files.Lock  # this process's lock of the workdir


def lock_name(process_index: int) -> str:
  """The lock file of a process in the workdir (see the module doc)."""
  return 'train.lock' if process_index == 0 else f'train.{process_index}.lock'


# ----------------------------------------------------------------------------------------------
# The steps of a run.

def setup_run(config, workdir: str, partitioner: Partitioner | None = None) -> tuple[Run, Any]:
  """Validates `config` against itself and the run in `workdir`, builds everything, writes the
  run's config. Returns (run, freshly initialised state)."""
  partitioner = partitioner or Partitioner.from_config(config)
  validate_config(config)
  partitioner.local_batch_size(int(config.train.batch_size))  # must divide by the data axis
  os.makedirs(workdir, exist_ok=True)
  lock = files.lock(os.path.join(workdir, lock_name(jax.process_index())),
                    busy=f'{workdir} is in use by another trainer: wait for it to finish, or '
                         'train into another --workdir')
  try:
    # Created by every process at the same point: orbax synchronises the processes here.
    checkpointer = Checkpointer(workdir)
    try:
      resuming = checkpointer.latest_step('latest') is not None
      if resuming:
        run_config.check_resumable(workdir, config)
      return _build_run(config, workdir, partitioner, checkpointer, lock, resuming)
    except BaseException:
      checkpointer.close()
      raise
  except BaseException:
    lock.release()
    raise


def _build_run(config, workdir: str, partitioner: Partitioner, checkpointer: Checkpointer,
               lock: files.Lock, resuming: bool) -> tuple[Run, Any]:
  dataset, model, tx, state, steps_per_epoch = setup(config, partitioner=partitioner)
  if resuming:
    evaluation.check_trained_on(workdir, dataset, config.data.name)
  main = is_main_process()
  if main:
    run_config.save(workdir, config)
    files.write_text(os.path.join(workdir, 'feature_spec.json'), dataset.spec.to_json())
  shardings = state_shardings(state)
  layout = partitioner.describe(state.params, shardings.params)
  log.info('%s', layout)
  if main:
    print(layout)
  t = config.train
  train_step = partitioner.jit_train_step(
      make_train_step(model, tx, mi_weight(config.model)), shardings,
      donate_state=bool(t.get('sparse_embeddings', False)))
  run = Run(config=config, workdir=workdir, partitioner=partitioner, dataset=dataset,
            train_step=train_step,
            predict_step=partitioner.jit_predict_step(make_predict_step(model), shardings),
            checkpointer=checkpointer, log=MetricsLog(workdir, enabled=main),
            steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * int(t.num_epochs),
            eval_every=int(t.eval_every_steps) or steps_per_epoch,
            n_params=count_params(state.params), main=main, lock=lock)
  if main:
    print(f'model {config.model.name}: {run.n_params:,} parameters; '
          f'{len(dataset.splits["train"]["label"]):,} training rows, {steps_per_epoch} steps/epoch,'
          f' {run.total_steps} steps at most')
  return run, state


def restore_or_init(run: Run, state) -> tuple[Any, LoopState]:
  """The latest checkpoint of the workdir (onto this run's mesh, whatever mesh wrote it), or the
  initial state. Log rows written after that checkpoint are dropped: they are written again."""
  step = run.checkpointer.latest_step('latest')
  if step is None:
    run.log.truncate(after_step=-1)
    return state, LoopState()
  fresh = state
  state, meta = run.checkpointer.restore('latest', state)
  state = state.replace(opt_state=with_hyperparams_of(state.opt_state, fresh.opt_state))
  loop = LoopState.from_meta(meta)
  run.log.truncate(after_step=step)
  log.info('resumed from step %d (epoch %d)', step, loop.epoch)
  if run.main:
    print(f'Resuming from {run.checkpointer.directory}/latest at step {step}')
  return state, loop


def evaluate(run: Run, state, split: str = 'validation') -> dict:
  result, _ = evaluation.evaluate(run.predict_step, state, run.dataset.splits[split],
                                  run.dataset.spec, int(run.config.train.eval_batch_size),
                                  run.partitioner)
  return result


def maybe_checkpoint(run: Run, state, loop: LoopState, step: int, result: dict) -> str:
  """Updates the early-stopping record with `result`, saves the best and the latest state.

  The first evaluation of a run always sets the best checkpoint. Returns a line for the user.
  """
  name, score = selection_score(result)
  if loop.best_step < 0 or score > loop.best_score:
    loop.best_score, loop.best_step, loop.evals_without_improvement = score, step, 0
    run.checkpointer.save('best', step, state, loop.to_meta())
  else:
    loop.evals_without_improvement += 1
    patience = int(run.config.train.early_stop_patience)
    loop.stopped_early = bool(patience) and loop.evals_without_improvement >= patience
  run.checkpointer.save('latest', step, state, loop.to_meta())
  shown = lambda s: -s if name == 'logloss' else s
  note = ' (AUC undefined: one class in validation)' if name == 'logloss' else ''
  return (f'step {step} epoch {loop.epoch}: validation {name} {shown(score):.4f} (best '
          f'{shown(loop.best_score):.4f} at step {loop.best_step}){note}'
          + (' - early stop' if loop.stopped_early else ''))


def train_epoch(run: Run, state, loop: LoopState, step: int, progress, throughput: Throughput,
                stop_after_steps: int | None = None) -> tuple[Any, int, bool]:
  """Trains from `loop`'s position to the end of its epoch (or an early stop), evaluating and
  checkpointing on the way. Returns (state, step, interrupted by stop_after_steps)."""
  t = run.config.train
  batch_size = int(t.batch_size)
  p = run.partitioner
  # This process's rows of every global batch (all of them on one process).
  batches = pipeline.train_batches(run.dataset.splits['train'], batch_size, int(run.config.seed),
                                   loop.epoch, start_step=loop.step_in_epoch,
                                   process_index=p.data_shard_index,
                                   process_count=p.data_shard_count)
  device_batches = prefetch((p.shard_batch(model_inputs(b)) for b in batches), int(t.prefetch))
  step_metrics = StepMetrics(max_steps_in_flight())
  train_metrics: dict = {}
  window_start, window_examples = time.perf_counter(), 0
  try:
    for batch in device_batches:
      state, m = run.train_step(state, batch)
      step_metrics.add(m)
      throughput.step_done(batch_size)
      step += 1
      loop.step_in_epoch += 1
      window_examples += batch_size
      progress.update(1)
      if step % int(t.log_every_steps) == 0:
        train_metrics = step_metrics.fetch(step, run.checkpointer)
        now = time.perf_counter()
        rate = window_examples / max(now - window_start, 1e-9)
        window_start, window_examples = now, 0
        progress.set_postfix(loss=f'{train_metrics["loss"]:.4f}', ex_s=f'{rate:,.0f}')
        run.log.scalars(step, {**{f'train/{k}': v for k, v in train_metrics.items()},
                               'train/examples_per_s': rate})
      end_of_epoch = loop.step_in_epoch == run.steps_per_epoch
      if end_of_epoch:
        loop.epoch, loop.step_in_epoch = loop.epoch + 1, 0
      if step % run.eval_every == 0 or end_of_epoch:
        train_metrics = step_metrics.fetch(step, run.checkpointer) or train_metrics
        jax.block_until_ready(state.step)
        throughput.pause()
        result = evaluate(run, state)
        run.log.evaluation(step, loop.epoch, 'validation', result, train_metrics)
        line = maybe_checkpoint(run, state, loop, step, result)
        throughput.resume()
        if run.main:
          progress.write(line)
        if loop.stopped_early:
          break
      if stop_after_steps is not None and step >= stop_after_steps:
        return state, step, True
  finally:
    device_batches.close()
  return state, step, False


def final_report(run: Run, state, loop: LoopState, step: int, throughput: Throughput) -> dict:
  """Scores the best state on validation and test; writes final_metrics.json."""
  best_state, _ = run.checkpointer.restore('best', state)
  summary = {'model': run.config.model.name, 'params': run.n_params, 'best_step': loop.best_step,
             'train_examples_per_s': throughput.rate, 'steps': step}
  for split in ('validation', 'test'):
    summary[split] = evaluate(run, best_state, split)
    run.log.evaluation(loop.best_step, None, f'best/{split}', summary[split])
  if run.main:
    files.write_text(os.path.join(run.workdir, 'final_metrics.json'),
                     json.dumps(summary, indent=1, default=float))
  return summary


def train_and_evaluate(config, workdir: str, stop_after_steps: int | None = None,
                       partitioner: Partitioner | None = None) -> dict:
  """Trains `config` in `workdir`; returns {'validation': metrics, 'test': metrics, ...}.

  An existing run in `workdir` is resumed; a config that would change what it computes is refused
  (run_config.check_resumable). `stop_after_steps` ends the run early, as an interruption would
  (used to test resuming). `partitioner` defaults to the mesh of `config.mesh` over all devices
  of all processes.
  """
  with files.storage_errors(f'training in {workdir}', kept='what the run saved before is kept: '
                            'run the same command again to resume'):
    run, state = setup_run(config, workdir, partitioner)
    try:
      summary = _train(run, state, stop_after_steps)
    except BaseException:
      close_run(run, quietly=True)
      raise
    close_run(run)
    return summary


def _train(run: Run, state, stop_after_steps: int | None) -> dict:
  config = run.config
  state, loop = restore_or_init(run, state)
  step = int(state.step)
  throughput = Throughput()
  progress = tqdm(total=run.total_steps, initial=step, desc='train', unit='step',
                  dynamic_ncols=True, disable=not (config.train.progress_bar and run.main))
  try:
    while loop.epoch < int(config.train.num_epochs) and not loop.stopped_early:
      state, step, interrupted = train_epoch(run, state, loop, step, progress, throughput,
                                             stop_after_steps)
      if interrupted:
        return {'interrupted_at': step}
  finally:
    progress.close()
  run.checkpointer.wait()
  return final_report(run, state, loop, step, throughput)


def close_run(run: Run, quietly: bool = False) -> None:
  """Waits for the checkpoint writes, closes the log and releases the workdir, all of them
  whatever fails. `quietly`: after the error that ended the run, which a failure here (the same
  full disk, orbax's threads after it) must not replace."""
  errors = []
  for close in (run.checkpointer.wait, run.checkpointer.close, run.log.close, run.lock.release):
    try:
      close()
    except Exception as e:  # noqa: BLE001 (raised below, or the run's own error is)
      errors.append(e)
  if errors and not quietly:
    raise errors[0]

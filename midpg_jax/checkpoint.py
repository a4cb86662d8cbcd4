"""Orbax checkpoints of the train state: the latest (for resuming) and the best (for evaluation).

One orbax CheckpointManager in <workdir>/checkpoints/<step>/ keeps two steps at most: the latest
(the state after the most recent evaluation, and the trainer's position: epoch, step in epoch,
early-stopping record) and the best (the state with the best validation score so far). A step
saved as best carries the metric {'best_step': step}; the manager's preservation policy keeps the
newest step (LatestN(1)) and the newest step with that metric (BestN(1)), so the best is written
once, also when it is the latest, and `best_step()` is orbax's own.

Runs written before (checkpoints/latest/<step>/ and checkpoints/best/<step>/, a manager each) are
read as they are: evaluation, prediction and export work on them; training does not resume there.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so an
interrupted or failed save never damages the previous checkpoint.

A full disk or an unwritable folder while saving is a StorageError (one line, the previous
checkpoints kept): orbax writes in background threads and reports tensorstore's OS errors as
ValueErrors carrying `[os_error_code='28']`, at the next save or wait. The trainer's Checkpointer
removes the unfinished folders a failed or killed save left when it starts (orbax's
`cleanup_tmp_directories`; only a writer may, which the trainer's lock makes the only one; a
single-process run only, see __init__).

Checkpoints are independent of the mesh: every process writes the shards it owns (the workdir
must be on a filesystem all hosts share), and `restore` reads each array straight into the
shardings of the *target* (the current mesh's), so a state saved on 8 devices restores on 1, or on
another (data, model) shape, and training continues identically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from midpg_jax import files
from midpg_jax.errors import CheckpointError, StorageError

KINDS = ('latest', 'best')
_BEST = 'best_step'  # the metric of a step saved as best: its step, so the newest best wins
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def environment_errno(e: BaseException | None) -> int | None:
  """The errno of a fault of the machine behind `e` or its causes (files.ENVIRONMENT_ERRNOS): an
  OSError's, or the one tensorstore writes into its messages."""
  while e is not None:
    code = e.errno if isinstance(e, OSError) else None
    found = _OS_ERROR_CODE.search(str(e))
    code = code if code is not None else (int(found.group(1)) if found else None)
    if code in files.ENVIRONMENT_ERRNOS:
      return code
    e = e.__cause__ or e.__context__
  return None


def _restore_target(x: Any) -> Any:
  """A leaf of the restore target: shape, dtype and the sharding to read it into."""
  if (isinstance(x, jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)):
    # Typed PRNG keys are stored as their key data (orbax keeps the key type in the metadata).
    data = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
  return ocp.utils.to_shape_dtype_struct(x)


def _manager(path: str, create: bool) -> ocp.CheckpointManager:
  """The one manager of a workdir: keeps the newest step and the newest step saved as best."""
  best_fn = lambda metrics: metrics[_BEST]  # noqa: E731
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=1),
      checkpoint_managers.BestN(get_metric_fn=best_fn, n=1,
                                keep_checkpoints_without_metrics=False)])
  # best_fn makes best_step() orbax's; the policy (not max_to_keep, which would keep the best
  # N only) decides what is deleted.
  # Unfinished folders of an interrupted save are removed at start, not with several processes:
  # there orbax's cleanup broke the next save's barrier ("Barrier _async_write_complete.300 is
  # already ongoing"; tests/test_distributed.py's two-process run timed out); orbax ignores
  # them anyway.
  options = ocp.CheckpointManagerOptions(
      create=create, best_fn=best_fn, preservation_policy=policy,
      cleanup_tmp_directories=create and jax.process_count() == 1)
  return ocp.CheckpointManager(path, options=options)


def _missing(kind: str, directory: str) -> CheckpointError:
  return CheckpointError(f'no {kind} checkpoint in {directory}: train first (midpg-train '
                         f'--config ... --workdir {os.path.dirname(directory)})')


def require(workdir: str, kind: str) -> None:
  """Raises the CheckpointError of a missing `kind` checkpoint before anything costly is built."""
  checkpointer = Checkpointer(workdir, create=False)
  try:
    if checkpointer.latest_step(kind) is None:
      raise _missing(kind, checkpointer.directory)
  finally:
    checkpointer.close()


class _HideStorageFaults(logging.Filter):
  """Drops the log records of a fault of the machine (their exception or message carries its
  errno): orbax's threads log each failed write with a traceback, dozens of them after one full
  disk, and asyncio logs their futures again; the save that meets it raises one StorageError."""

  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    if environment_errno(exc) is not None:
      return False
    found = _OS_ERROR_CODE.search(record.getMessage())
    return not (found and int(found.group(1)) in files.ENVIRONMENT_ERRNOS)


def _hide_storage_faults() -> None:
  for name in ('absl', 'asyncio'):  # orbax logs through absl
    logger = logging.getLogger(name)
    if not any(isinstance(f, _HideStorageFaults) for f in logger.filters):
      logger.addFilter(_HideStorageFaults())


class Checkpointer:
  def __init__(self, workdir: str, create: bool = True):
    _hide_storage_faults()
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    legacy = [k for k in KINDS if os.path.isdir(os.path.join(self.directory, k))]
    self._legacy = {k: ocp.CheckpointManager(os.path.join(self.directory, k),
                                             options=ocp.CheckpointManagerOptions(read_only=True))
                    for k in legacy}
    self._manager = None
    if not legacy and (create or os.path.isdir(self.directory)):
      self._manager = _manager(self.directory, create)

  def latest_step(self, kind: str) -> int | None:
    if kind in self._legacy:
      return self._legacy[kind].latest_step()
    if self._manager is None:
      return None
    return self._manager.best_step() if kind == 'best' else self._manager.latest_step()

  @contextlib.contextmanager
  def _writing(self) -> Iterator[None]:
    try:
      yield
    except Exception as e:
      code = environment_errno(e)
      if code is None:
        raise
      raise StorageError(files.storage_message(
          f'writing checkpoints into {self.directory}', code,
          kept='the checkpoints saved before are kept')) from e

  def save(self, kind: str, step: int, state: Any, meta: dict) -> None:
    """Saves `state` and `meta` at `step` as the `kind` checkpoint; a step saved already (the
    trainer saves a new best, then the same step as the latest) is not written again."""
    if self._manager is None:
      raise CheckpointError(f'{self.directory} holds checkpoints of an older layout (latest/, '
                            'best/): they can be evaluated, not trained further; use another '
                            '--workdir')
    if step in self._manager.all_steps():
      return
    with self._writing():  # also raises what failed in the previous save's thread
      self._manager.save(
          step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        meta=ocp.args.JsonSave(meta)),
          metrics={_BEST: step} if kind == 'best' else None, force=True)

  def restore(self, kind: str, abstract_state: Any,
              weights_only: bool = False) -> tuple[Any, dict]:
    """Restores onto the structure and shardings of `abstract_state`.

    `abstract_state` is a state of jax.Arrays (its shardings are the targets) or of
    jax.ShapeDtypeStructs carrying `sharding` (e.g. `Partitioner.abstract_state`).
    `weights_only=True` (evaluation, prediction, export) returns the state with `opt_state=None`
    and accepts any saved optimizer state: a run stays readable whatever optimizer layout trained
    it (e.g. one saved before the learning rate moved into the optimizer state).
    """
    step = self.latest_step(kind)
    path = os.path.join(self.directory, kind) if kind in self._legacy else self.directory
    if step is None:
      raise _missing(kind, self.directory)
    target = jax.tree_util.tree_map(_restore_target, abstract_state)
    try:
      try:
        restored = self._read(kind, step, target)
      except Exception:
        if not weights_only:
          raise
        # Another optimizer layout: read the optimizer state as saved (replicated), then drop it.
        restored = self._read(kind, step, target.replace(
            opt_state=self._saved_opt_state(path, step, target.step.sharding)))
    except Exception as e:  # orbax raises many types for unreadable or mismatched data
      # One line: orbax's message can be a many-line tree diff (kept as the __cause__).
      first = next((l.strip() for l in str(e).splitlines() if l.strip()), '')
      raise CheckpointError(
          f'the {kind} checkpoint at {path}/{step} could not be restored: it is corrupt or was '
          f'written by a different model/config ({type(e).__name__}: {first[:200]})') from e
    state = restored['state']
    return (state.replace(opt_state=None) if weights_only else state), dict(restored['meta'])

  def _read(self, kind: str, step: int, target: Any) -> dict:
    manager = self._legacy.get(kind, self._manager)
    return manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                      meta=ocp.args.JsonRestore()))

  @staticmethod
  def _saved_opt_state(path: str, step: int, sharding) -> Any:
    """The restore target of the optimizer state as saved (shapes and dtypes from the checkpoint's
    metadata), on `sharding` (the step counter's: replicated); read, then dropped."""
    tree = ocp.StandardCheckpointer().metadata(
        os.path.join(path, str(step), 'state')).item_metadata.tree
    return jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding),
        tree.get('opt_state'), is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'))

  def _managers(self) -> list[ocp.CheckpointManager]:
    return [m for m in (self._manager, *self._legacy.values()) if m is not None]

  def wait(self) -> None:
    with self._writing():
      for manager in self._managers():
        manager.wait_until_finished()

  def close(self) -> None:
    with self._writing():
      for manager in self._managers():
        manager.close()

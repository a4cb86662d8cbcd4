"""Orbax checkpoints of the train state: the latest (for resuming) and the best (for evaluation).

Layout in the workdir:
  checkpoints/latest/<step>/   the state after the most recent evaluation, and the trainer's
                               position (epoch, step in epoch, early-stopping record)
  checkpoints/best/<step>/     the state with the best validation AUC so far

Orbax writes each checkpoint to a temporary folder and renames it when complete, so an
interrupted or failed save never damages the previous checkpoint.

Checkpoints are independent of the mesh: every process writes the shards it owns (the workdir
must be on a filesystem all hosts share), and `restore` reads each array straight into the
shardings of the *target* (the current mesh's), so a state saved on 8 devices restores on 1, or on
another (data, model) shape, and training continues identically.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from midpg_jax.errors import CheckpointError

KINDS = ('latest', 'best')


def _restore_target(x: Any) -> Any:
  """A leaf of the restore target: shape, dtype and the sharding to read it into."""
  if (isinstance(x, jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)):
    # Typed PRNG keys are stored as their key data (orbax keeps the key type in the metadata).
    data = jax.eval_shape(jax.random.key_data, x)
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
  return ocp.utils.to_shape_dtype_struct(x)


class Checkpointer:
  def __init__(self, workdir: str, create: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self._managers = {}
    for kind in KINDS:
      options = ocp.CheckpointManagerOptions(max_to_keep=1, create=create)
      path = os.path.join(self.directory, kind)
      if not create and not os.path.isdir(path):
        continue
      self._managers[kind] = ocp.CheckpointManager(path, options=options)

  def latest_step(self, kind: str) -> int | None:
    manager = self._managers.get(kind)
    return None if manager is None else manager.latest_step()

  def save(self, kind: str, step: int, state: Any, meta: dict) -> None:
    self._managers[kind].save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(meta)), force=True)

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
    path = os.path.join(self.directory, kind)
    if step is None:
      raise CheckpointError(f'no {kind} checkpoint in {path}: train first '
                            f'(python train.py --config ... --workdir {os.path.dirname(self.directory)})')
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
    return self._managers[kind].restore(
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

  def wait(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()

"""Feeding the train step and reading it back: prefetching batches, fetching step metrics (with
a bound on the steps queued on the devices), and measuring training throughput."""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Iterator

import jax
import numpy as np

from midpg_jax.checkpoint import Checkpointer
from midpg_jax.errors import NonFiniteLossError


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Runs `iterator` (host batch assembly + device transfer) in a thread, `size` items ahead.

  Closing the generator (or leaving the loop early) stops the thread.
  """
  if size <= 0:
    yield from iterator
    return
  q: queue.Queue = queue.Queue(maxsize=size)
  done, stop = object(), threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def worker():
    try:
      for item in iterator:
        if not put(item):
          return
    except BaseException as e:  # re-raised in the consumer
      put(e)
      return
    put(done)

  thread = threading.Thread(target=worker, daemon=True)
  thread.start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    # Wait for the worker to drop its batch: a daemon thread still holding device arrays when the
    # interpreter shuts down frees them in its exit, which aborts the process (SIGABRT in
    # PyArray_Storage's destructor, seen after a run ended by a full disk).
    thread.join(timeout=_JOIN_SECONDS)
    while not q.empty():
      q.get_nowait()


# How long closing a prefetch waits for its worker to finish the item it is producing.
_JOIN_SECONDS = 60.0


class StepMetrics:
  """Device-side step metrics since the last log, fetched in one transfer.

  `max_in_flight` > 0 waits for the step before the last one before returning from `add`, so at
  most that many steps are queued on the devices (see `partitioning.max_steps_in_flight`).
  """

  def __init__(self, max_in_flight: int = 0):
    self.pending: list[dict] = []
    self.max_in_flight = max_in_flight
    self._in_flight: list = []

  def add(self, step_metrics: dict) -> None:
    self.pending.append(step_metrics)
    if self.max_in_flight:
      self._in_flight.append(step_metrics)
      if len(self._in_flight) >= self.max_in_flight:
        jax.block_until_ready(self._in_flight.pop(0))

  def fetch(self, step: int, checkpointer: Checkpointer) -> dict:
    """Means over the pending steps; raises NonFiniteLossError on a NaN/inf."""
    if not self.pending:
      return {}
    fetched = jax.device_get(self.pending)  # replicated: every process reads its own copy
    self.pending = []
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    if not all(math.isfinite(v) for v in means.values()):
      raise NonFiniteLossError(
          f'training loss became non-finite ({means}) before step {step}; stopped. The last good '
          f'checkpoint (step {checkpointer.latest_step("latest")}) is kept in '
          f'{checkpointer.directory}. Lower train.learning_rate or set train.grad_clip_norm.')
    return means


class Throughput:
  """Training examples/s of the step loop only: from the end of the first (compiling) step of
  this process's run, evaluations excluded (`pause` ... `resume` around them)."""

  def __init__(self):
    self.examples, self.seconds, self._since = 0, 0.0, None

  def step_done(self, batch_size: int) -> None:
    if self._since is None:  # the first step: compiles; the clock starts after it
      self._since = time.perf_counter()
    else:
      self.examples += batch_size

  def pause(self) -> None:
    self.seconds += time.perf_counter() - self._since

  def resume(self) -> None:
    self._since = time.perf_counter()

  @property
  def rate(self) -> float:
    return self.examples / self.seconds if self.seconds else float('nan')

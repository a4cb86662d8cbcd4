"""Alternating repetitions: every repetition times each contender once, in a rotating order, so a
noisy, shared machine slows them alike and their ratios hold."""

from __future__ import annotations

import time

import numpy as np


def build_once(contender, spec, sample_batch) -> bool:
  """Builds `contender` unless built (contenders persist across batch sizes); True if it built
  it now."""
  if contender.model is not None:
    return False
  t0 = time.perf_counter()
  contender.build(spec, sample_batch)
  print(f'  built {contender.name} ({time.perf_counter() - t0:.1f}s)', flush=True)
  return True


def stats(times_s: list[float]) -> dict:
  """Milliseconds: median, p25, p75, min, max over the repetitions."""
  a = np.asarray(times_s) * 1e3
  return {'median_ms': float(np.median(a)), 'p25_ms': float(np.percentile(a, 25)),
          'p75_ms': float(np.percentile(a, 75)), 'min_ms': float(a.min()),
          'max_ms': float(a.max()), 'n': int(a.size)}


def alternate(contenders, fn_name: str, k: int, reps: int) -> dict[str, list[float]]:
  """{name: [seconds per step]}: `getattr(contender, fn_name)(k)` timed, rotating the order."""
  out = {c.name: [] for c in contenders}
  for r in range(reps):
    order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
    for c in order:
      t0 = time.perf_counter()
      getattr(c, fn_name)(k)
      out[c.name].append((time.perf_counter() - t0) / k)
  return out


def examples_per_s(batch_size: int, times_s: list[float]) -> float:
  return batch_size / float(np.median(times_s))

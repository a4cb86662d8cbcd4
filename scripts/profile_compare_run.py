"""Where one comparison run's wall time goes (data, build, compile, train steps, evaluations,
checkpoints, the final test scoring), for a few models at the synthetic bench's base config.

  python -m scripts.profile_compare_run --models midpg,mmoe [--cache DIR]

Wraps the trainer's pieces with timers (nothing about the computation changes) and prints one
line per model. --cache turns on JAX's persistent compilation cache in DIR (as the comparison
does), so a second invocation shows what a warm cache saves.
"""

import argparse
import collections
import contextlib
import io
import tempfile
import time

import jax

from midpg_jax import build, checkpoint, compare, evaluation, trainer
from midpg_jax.compare import config as compare_config
from midpg_jax.compare.plan import variant_config
from midpg_jax.data import load_dataset

TIMES = collections.defaultdict(float)
COUNTS = collections.Counter()


def timed(name, fn, block=False):
  def wrapper(*a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    if block:
      jax.block_until_ready(out)
    TIMES[name] += time.perf_counter() - t0
    COUNTS[name] += 1
    return out
  return wrapper


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--models', default='midpg,mmoe')
  p.add_argument('--cache', default='')
  p.add_argument('--reuse_data', action='store_true')
  args = p.parse_args()
  if args.cache:
    compare.enable_compilation_cache(args.cache)
  cmp = compare_config.synthetic()
  t0 = time.perf_counter()
  dataset = load_dataset(cmp.base.data)
  print(f'data generation: {time.perf_counter() - t0:.1f} s', flush=True)
  if args.reuse_data:
    orig_load = build.load_dataset
    build.load_dataset = lambda cfg: dataset
  else:
    build.load_dataset = timed('data', build.load_dataset)
  trainer.evaluate = timed('evaluate', trainer.evaluate)
  checkpoint.Checkpointer.save = timed('checkpoint_save', checkpoint.Checkpointer.save)
  orig_jit = trainer.Partitioner.jit_train_step

  def jit_train_step(self, *a, **k):
    step = orig_jit(self, *a, **k)
    first = [True]

    def wrapped(state, batch):
      t = time.perf_counter()
      out = step(state, batch)
      if first[0]:  # compile (tracing + XLA) plus one step
        jax.block_until_ready(out)
        TIMES['train_step_first(compile)'] += time.perf_counter() - t
        first[0] = False
      else:
        TIMES['train_step_dispatch'] += time.perf_counter() - t
      return out
    return wrapped
  trainer.Partitioner.jit_train_step = jit_train_step
  for name in args.models.split(','):
    TIMES.clear()
    COUNTS.clear()
    cfg = variant_config(cmp, name, {'model.name': name}, 0)
    with tempfile.TemporaryDirectory() as wd:
      t = time.perf_counter()
      with contextlib.redirect_stdout(io.StringIO()):
        trainer.train_and_evaluate(cfg, wd)
      train_s = time.perf_counter() - t
      t = time.perf_counter()
      evaluation.evaluate_checkpoint(cfg, wd, 'test')
      test_s = time.perf_counter() - t
    parts = ', '.join(f'{k} {v:.1f} s' + (f' (x{COUNTS[k]})' if COUNTS[k] > 1 else '')
                      for k, v in TIMES.items())
    print(f'{name}: train_and_evaluate {train_s:.1f} s [{parts}]; evaluate_checkpoint(test) '
          f'{test_s:.1f} s', flush=True)


if __name__ == '__main__':
  main()

"""Train-step time of each `model.scenario_matmul` path by number of scenarios S (the 'auto' rule).

  python -m scripts.scenario_paths --models midpg,shared_bottom \
      --scenarios 4,16,64 --batch 4096 --paths tiled,ragged,onehot,masked

Synthetic data with S equally likely scenarios, default widths; per (model, S) the paths are timed
alternately (median of --reps repetitions of --steps steps) after one compiled warm-up.
"""

import argparse
import statistics
import time

import jax
import numpy as np

from midpg_jax import config as default
from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import build_model, mi_weight
from midpg_jax.train_state import (create_train_state, make_optimizer, make_train_step,
                                   model_inputs)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--models', default='midpg,shared_bottom')
  ap.add_argument('--scenarios', default='4,16,64')
  ap.add_argument('--paths', default='tiled,ragged,onehot,masked')
  ap.add_argument('--batch', type=int, default=4096)
  ap.add_argument('--reps', type=int, default=5)
  ap.add_argument('--steps', type=int, default=3)
  ap.add_argument('--dtype', default='float32')
  args = ap.parse_args()
  print(f'device {jax.devices()[0].device_kind}, batch {args.batch}, dtype {args.dtype}')
  for num_scen in [int(s) for s in args.scenarios.split(',')]:
    c = default.get_config()
    c.data.num_train, c.data.num_val, c.data.num_test = 4 * args.batch, 1000, 1000
    c.data.num_scenarios = num_scen
    c.data.scenario_weights = tuple([1.0 / num_scen] * num_scen)
    c.data.base_rates = tuple(np.linspace(0.02, 0.08, num_scen))
    c.train.embedding_l2 = 0.0
    ds = load_dataset(c.data)
    batch = model_inputs(next(pipeline.eval_batches(ds.splits['train'], args.batch)))
    batch['weight'] = np.ones_like(batch['label'], np.float32)
    batch['label'] = np.asarray(batch['label'], np.float32)
    for name in args.models.split(','):
      steps = {}
      for path in args.paths.split(','):
        cfg = c.model.copy_and_resolve_references()
        cfg.name, cfg.scenario_matmul = name, path
        if 'dtype' in cfg:
          cfg.dtype = args.dtype
        model = build_model(cfg, ds.spec)
        tx = make_optimizer(c.train, 1000)
        state = create_train_state(model, tx, batch, jax.random.key(0))
        step = jax.jit(make_train_step(model, tx, mi_weight(c.model)), donate_argnums=0)
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        steps[path] = [step, state, []]
      for _ in range(args.reps):
        for path, entry in steps.items():
          t0 = time.perf_counter()
          for _ in range(args.steps):
            entry[1], metrics = entry[0](entry[1], batch)
          jax.block_until_ready(entry[1])
          entry[2].append((time.perf_counter() - t0) / args.steps)
      best = min(statistics.median(e[2]) for e in steps.values())
      for path, entry in steps.items():
        ms = 1e3 * statistics.median(entry[2])
        print(f'{name:14s} S={num_scen:3d} {path:7s} {ms:8.1f} ms/step  '
              f'{ms / (1e3 * best):5.2f}x best', flush=True)


if __name__ == '__main__':
  main()

"""Every model on every scenario path on one mesh: 1 device, or 8 host CPU devices in pure data
parallelism (tests/test_sharded_paths.py runs both at once, one subprocess each: the fake devices
must be set before JAX starts).

For each model and path the train step is compiled (global batch 8 x 1024 on either mesh) and
reported: XLA's per-device FLOPs, the collectives and the all-gathers of batch rows in the
optimised HLO, and the losses and parameters after a few steps from the same initial state.
Writes <out>/report.json and one .npz of parameters per model and path.
"""

import argparse
import json
import os

STEPS = 2
ROWS = 1024  # per device of the 8: the batch's share of the work is what must fall as 1 / devices
DEVICES = 8


def config(name: str, path: str):
  from conftest import small_config
  c = small_config(num_train=DEVICES * ROWS * STEPS, num_val=256, num_test=256)
  c.model.name, c.model.scenario_matmul = name, path
  c.model.hidden = (32, 16)
  c.train.batch_size = DEVICES * ROWS
  # SGD, not Adam: Adam's m / sqrt(v) turns float rounding in a gradient that is zero in exact
  # arithmetic (e.g. HAMUR's adapter biases ahead of a normalisation) into a step of ~lr either
  # way, which would compare rounding, not the two meshes' gradients.
  c.train.optimizer, c.train.learning_rate = 'sgd', 0.05
  return c


def model_paths(dataset) -> dict[str, list[str]]:
  """{model: its scenario paths ('auto' alone for a model without per-scenario weights)}."""
  from midpg_jax import build
  from midpg_jax.models import model_names
  from midpg_jax.models.scenario_ops import SCENARIO_MATMULS
  out = {}
  for name in model_names():
    routed = getattr(type(build._build_model(config(name, 'auto'), dataset)),
                     'uses_scenario_path', False)  # Logistic is no ScenarioModel
    out[name] = [p for p in SCENARIO_MATMULS if p != 'auto'] if routed else ['auto']
  return out


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument('--out', required=True)
  p.add_argument('--devices', type=int, required=True)
  args = p.parse_args()
  import jax
  import numpy as np
  from conftest import FAST_COMPILE
  from midpg_jax import build
  from midpg_jax.aot import analysis
  from midpg_jax.data import load_dataset, pipeline
  from midpg_jax.models import mi_weight
  from midpg_jax.partitioning import Partitioner
  from midpg_jax.train_state import make_train_step, model_inputs

  dataset = load_dataset(config('mlp', 'auto').data)
  part = Partitioner((-1, 1), devices=jax.devices()[:args.devices])
  report = {}
  for name, paths in model_paths(dataset).items():
    init = None
    for path in paths:
      c = config(name, path)
      # The parameters do not depend on the path: one init per model.
      _, model, tx, state, _ = build.setup(c, dataset, part, abstract=init is not None)
      init = state = init or state
      step = part.jit_train_step(make_train_step(model, tx, mi_weight(c.model)),
                                 build.state_shardings(state))
      batches = [part.shard_batch(model_inputs(b)) for b in pipeline.train_batches(
          dataset.splits['train'], c.train.batch_size, seed=0, epoch=0)]
      compiled = step.lower(state, batches[0]).compile(FAST_COMPILE)
      info = analysis.analyse(compiled, c.train.batch_size // part.data_size)
      losses = []
      for batch in batches:
        state, metrics = compiled(state, batch)
        losses.append(float(metrics['loss']))
      params = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
      np.savez(os.path.join(args.out, f'{name}-{path}.npz'),
               **{jax.tree_util.keystr(k): np.asarray(v) for k, v in params})
      report[f'{name}/{path}'] = {'flops': info['cost']['flops'], 'losses': losses,
                                  'collectives': info['collectives'],
                                  'batch_all_gathers': info['batch_all_gathers']}
      print(name, path, info['cost']['flops'], flush=True)
  with open(os.path.join(args.out, 'report.json'), 'w') as f:
    json.dump(report, f, indent=1)


if __name__ == '__main__':
  main()

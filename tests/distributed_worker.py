"""Runs the multi-device / multi-process scenarios of tests/test_distributed.py in a fresh process.

JAX reads XLA_FLAGS (--xla_force_host_platform_device_count) and the distributed settings once, at
start-up, so each scenario runs here, in a subprocess, and writes its results to --out:

  mesh     (8 CPU devices, one process) trains a few steps on 1 device and on a 4x2 mesh, saves a
           checkpoint on the 4x2 mesh, restores it on 1 device and on 2x4 and continues, evaluates
           on both meshes, and trains the two-process scenario's reference on 1 device.
           Writes mesh.npz, mesh.json, and a workdir `ckpt8` for the parent to restore.
  process  one of --num_processes processes on 127.0.0.1:--port (2 CPU devices each): runs the
           full trainer on a (-1, 2) mesh over all processes, then a long run of a tiny model
           with prefetching on (LONG_STEPS steps: a collective that hangs shows up there). Writes
           process<i>.json.
"""

import argparse
import json
import os
import time

# Imports: midpg_jax from the checkout (the parent sets PYTHONPATH to its root) and conftest from
# this folder (Python puts a script's own folder first on the path).

TRAIN_STEPS = 4  # before the checkpoint
MORE_STEPS = 3  # after it
LONG_STEPS = 300  # the trainer with prefetching, several hundred steps
COLLECTIVE_STEPS = 1000  # without the in-flight limit this loop hung within ~100 steps


def mesh_config():
  from conftest import small_config
  c = small_config(num_train=4_096, num_val=1_000, num_test=1_000)
  c.model.hidden = (32,)  # one modulated layer: compiles faster, exercises the same code
  c.train.batch_size = 256
  c.train.eval_batch_size = 90  # 1000 rows: not a multiple; 90 does not divide by 4 either
  c.train.num_epochs = 1
  return c


def process_config():
  c = mesh_config()
  c.data.num_train = 2_048  # 8 steps
  c.train.eval_batch_size = 256
  c.train.log_every_steps = 2
  c.mesh.shape = (-1, 2)
  return c


def long_config():
  """Steps that take longer on the devices than on the host (so the host queues steps ahead, as
  with the default model), small enough for a test."""
  c = process_config()
  c.data.num_train, c.data.num_val, c.data.num_test = 64 * LONG_STEPS, 256, 256
  c.model.hidden = (256, 128)
  c.train.batch_size, c.train.eval_batch_size = 64, 256
  c.train.log_every_steps = 50
  c.train.prefetch = 2
  return c


def collective_loop(steps: int = COLLECTIVE_STEPS) -> int:
  """The hang's mechanism without a model: a data-parallel all-reduce step over all 4 devices,
  queued as fast as the host can through the trainer's StepMetrics (and its in-flight bound).
  Unbounded, 2 processes x 2 CPU devices hung within ~100 steps in 5 of 5 tries."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from midpg_jax import partitioning
  from midpg_jax.stepping import StepMetrics
  p = partitioning.Partitioner((-1, 1))
  step = jax.jit(lambda w, x: (w - 0.1 * jnp.mean(x, axis=0), {'loss': jnp.sum(x)}),
                 in_shardings=(p.replicated, p.batch_sharding),
                 out_shardings=(p.replicated, p.replicated))
  w = jax.jit(lambda: jnp.zeros((16,)), out_shardings=p.replicated)()
  metrics = StepMetrics(partitioning.max_steps_in_flight())
  rows = 16 // p.data_shard_count
  for i in range(steps):
    w, m = step(w, p.shard_batch(np.full((rows, 16), i, np.float32)))
    metrics.add(m)
  jax.block_until_ready(w)
  return steps


class PhaseClock:
  """CPU seconds of this process (all its threads) per phase, for the report: what a scenario's
  time goes to (compiling, stepping, collectives) is measured, not guessed."""

  def __init__(self):
    self.seconds, self._last = {}, time.process_time()

  def __call__(self, phase: str) -> None:
    now = time.process_time()
    self.seconds[phase] = round(now - self._last, 2)
    self._last = now


def compiled_on_first_call(jitted):
  """`jitted` (a jax.jit function), compiled for its first call's arguments with
  conftest.FAST_COMPILE and reused for every later call (same shapes, same shardings). These
  scenarios compare meshes with each other, not XLA's optimisations, and compiling a step took
  most of each phase (~10 CPU-s per train step optimised)."""
  from conftest import FAST_COMPILE
  compiled = []

  def call(*args):
    if not compiled:
      compiled.append(jitted.lower(*args).compile(FAST_COMPILE))
    return compiled[0](*args)

  return call


def flat_params(tree) -> dict:
  import jax
  import numpy as np
  from midpg_jax.partitioning import path_names
  return {'/'.join(path_names(p)): np.asarray(jax.device_get(x))
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


class Runner:
  """The trainer's pieces on one partitioner: sharded state, jitted steps, this process's rows."""

  def __init__(self, config, dataset, partitioner, abstract=False):
    from midpg_jax import trainer
    from midpg_jax.models import mi_weight
    from midpg_jax.train_state import make_predict_step, make_train_step
    self.config, self.dataset, self.p = config, dataset, partitioner
    _, self.model, self.tx, self.state, _ = trainer.setup(config, dataset, partitioner, abstract)
    self.shardings = trainer.state_shardings(self.state)
    self.train_step = compiled_on_first_call(partitioner.jit_train_step(
        make_train_step(self.model, self.tx, mi_weight(config.model)), self.shardings))
    self.predict_step = compiled_on_first_call(partitioner.jit_predict_step(
        make_predict_step(self.model), self.shardings))

  def train(self, start: int, stop: int) -> list:
    import jax
    from midpg_jax.data import pipeline
    from midpg_jax.train_state import model_inputs
    c = self.config
    losses = []
    batches = pipeline.train_batches(self.dataset.splits['train'], int(c.train.batch_size),
                                     int(c.seed), 0, start_step=start,
                                     process_index=self.p.data_shard_index,
                                     process_count=self.p.data_shard_count)
    for _, batch in zip(range(stop - start), batches):
      self.state, m = self.train_step(self.state, self.p.shard_batch(model_inputs(batch)))
      losses.append(float(jax.device_get(m['loss'])))
    return losses

  def evaluate(self, split='validation'):
    from midpg_jax import evaluation
    return evaluation.evaluate(self.predict_step, self.state, self.dataset.splits[split],
                               self.dataset.spec, int(self.config.train.eval_batch_size), self.p)


def shard_shapes(x) -> list:
  return sorted({tuple(s.data.shape) for s in x.addressable_shards})


def run_mesh(out: str) -> None:
  import jax
  import numpy as np
  from midpg_jax import trainer
  from midpg_jax.checkpoint import Checkpointer
  from midpg_jax.data import load_dataset
  from midpg_jax.partitioning import Partitioner, path_names
  assert jax.device_count() == 8, jax.devices()
  clock = PhaseClock()
  c = mesh_config()
  dataset = load_dataset(c.data)
  report, arrays = {}, {}

  one = Runner(c, dataset, Partitioner((1, 1), devices=jax.devices()[:1]))
  mesh = Runner(c, dataset, Partitioner((4, 2)))
  report['layout_4x2'] = mesh.p.describe(mesh.state.params, mesh.shardings.params)
  print(report['layout_4x2'], flush=True)
  emb = mesh.state.params['features']
  report['shards_4x2'] = {k: shard_shapes(v) for k, v in emb.items()}
  report['opt_shards_4x2'] = {
      '/'.join(path_names(p)): shard_shapes(x)
      for p, x in jax.tree_util.tree_flatten_with_path(mesh.state.opt_state)[0]
      if any(n.startswith('embed_') for n in path_names(p))}
  # Created directly in shards under jit; the same values as on one device.
  report['init_equal'] = all(
      np.array_equal(a, flat_params(mesh.state.params)[k])
      for k, a in flat_params(one.state.params).items())

  # 1. The same steps on 1 device and on 4x2.
  clock('setup 1 and 4x2')
  report['losses_1'] = one.train(0, TRAIN_STEPS + MORE_STEPS)
  clock('train 1')
  report['losses_4x2'] = mesh.train(0, TRAIN_STEPS)
  clock('train 4x2')
  for k, v in flat_params(one.state.params).items():
    arrays[f'one/{k}'] = v

  # 2. A checkpoint written on 4x2 ...
  ckpt = os.path.join(out, 'ckpt8')
  meta = {'epoch': 0, 'step_in_epoch': TRAIN_STEPS, 'best_auc': 0.5, 'best_step': TRAIN_STEPS,
          'evals_without_improvement': 0, 'stopped_early': False}
  checkpointer = Checkpointer(ckpt)
  checkpointer.save('latest', TRAIN_STEPS, mesh.state, meta)
  checkpointer.wait()
  checkpointer.close()
  # ... evaluated there (3.) ...
  result, probs = mesh.evaluate()
  report['eval_4x2'], arrays['probs_4x2'] = result, probs
  report['losses_4x2'] += mesh.train(TRAIN_STEPS, TRAIN_STEPS + MORE_STEPS)
  clock('checkpoint, evaluate and train on 4x2')
  for k, v in flat_params(mesh.state.params).items():
    arrays[f'mesh/{k}'] = v

  # ... restored on 1 device and on 2x4, and trained on.
  # The 1-device target is a concrete state (the trainer's resume path), the 2x4 one abstract
  # arrays carrying the 2x4 shardings (eval.py's path): nothing is initialised there.
  for name, runner in (('1', one), ('2x4', Runner(c, dataset, Partitioner((2, 4)), True))):
    checkpointer = Checkpointer(ckpt, create=False)
    runner.state, restored_meta = checkpointer.restore('latest', runner.state)
    checkpointer.close()
    assert restored_meta == meta, restored_meta
    report[f'restored_step_{name}'] = int(runner.state.step)
    report[f'restored_shards_{name}'] = {k: shard_shapes(v) for k, v in
                                         runner.state.params['features'].items()}
    report[f'restored_sharding_ok_{name}'] = all(
        x.sharding == s for x, s in zip(jax.tree_util.tree_leaves(runner.state),
                                        jax.tree_util.tree_leaves(runner.shardings)))
    if name == '1':
      result, probs = runner.evaluate()
      report['eval_1'], arrays['probs_1'] = result, probs
    report[f'losses_resumed_{name}'] = runner.train(TRAIN_STEPS, TRAIN_STEPS + MORE_STEPS)
    for k, v in flat_params(runner.state.params).items():
      arrays[f'resumed_{name}/{k}'] = v
    clock(f'restore and train on {name}')

  # 4. The reference of the two-process run: the whole trainer on one device of one process.
  pc = process_config()
  summary = trainer.train_and_evaluate(
      pc, os.path.join(out, 'reference'),
      partitioner=Partitioner((1, 1), devices=jax.devices()[:1]))
  report['reference'] = summary
  with open(os.path.join(out, 'reference', 'metrics.jsonl')) as f:
    report['reference_jsonl'] = [json.loads(line) for line in f]
  clock('reference of the two-process run')
  report['cpu_s'] = clock.seconds
  print('CPU seconds per phase:', clock.seconds, flush=True)

  np.savez(os.path.join(out, 'mesh.npz'), **arrays)
  with open(os.path.join(out, 'mesh.json'), 'w') as f:
    json.dump(report, f, default=float)


def run_process(out: str, process_id: int, num_processes: int, port: int) -> None:
  import jax
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  from midpg_jax import partitioning, trainer
  clock = PhaseClock()
  assert partitioning.initialize_distributed('on', f'127.0.0.1:{port}', num_processes,
                                             process_id)
  assert jax.process_count() == num_processes and jax.local_device_count() == 2
  c = process_config()
  partitioner = partitioning.Partitioner.from_config(c)
  workdir = os.path.join(out, 'multiprocess')
  clock('start')
  summary = trainer.train_and_evaluate(c, workdir, partitioner=partitioner)
  clock('trainer')
  long_summary = trainer.train_and_evaluate(long_config(), os.path.join(out, 'long'),
                                            partitioner=partitioner)
  clock('long run')
  collective_steps = collective_loop()
  clock('collective loop')
  print('CPU seconds per phase:', clock.seconds, flush=True)
  report = {'summary': summary, 'long_summary': long_summary,
            'collective_steps': collective_steps, 'cpu_s': clock.seconds,
            'process_index': jax.process_index(),
            'data_shard': [partitioner.data_shard_index, partitioner.data_shard_count],
            'mesh': dict(partitioner.mesh.shape)}
  with open(os.path.join(out, f'process{process_id}.json'), 'w') as f:
    json.dump(report, f, default=float)
  jax.distributed.shutdown()


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('mode', choices=['mesh', 'process'])
  ap.add_argument('--out', required=True)
  ap.add_argument('--process_id', type=int, default=0)
  ap.add_argument('--num_processes', type=int, default=2)
  ap.add_argument('--port', type=int, default=0)
  args = ap.parse_args()
  from midpg_jax import xla_defaults
  xla_defaults.apply()  # as every entry point does, before JAX's backend starts
  if args.mode == 'mesh':
    run_mesh(args.out)
  else:
    run_process(args.out, args.process_id, args.num_processes, args.port)


if __name__ == '__main__':
  main()

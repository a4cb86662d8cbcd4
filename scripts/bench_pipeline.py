"""Does the columnar input pipeline keep up with training? Prints both rates and their ratio.

  python -m scripts.bench_pipeline --config configs/aliccp.py \
      --config.data.manual_dir=/tmp/aliccp_fake --config.data.prepared_dir=/tmp/aliccp_fake_prep \
      --generate_aliccp_rows=1000000

1. (optional) writes a random Ali-CCP-format training file of --generate_aliccp_rows rows (plus
   validation and test files a tenth that size; scripts/make_aliccp_like.py) into
   config.data.manual_dir;
2. prepares the dataset (timed; reused when already prepared);
3. pipeline: rows/s of `pipeline.train_batches` (shuffled, see pipeline.EpochOrder) on the
   memory-mapped training columns (host batch assembly, as the trainer's prefetch thread runs
   it), also with `jax.device_put`, and of one of two processes reading only its half;
4. training: examples/s of the jitted train step alone (batches already on the device) and of
   the trainer's loop shape (pipeline + prefetch thread + step).
"""

import os
import resource
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from midpg_jax import trainer
from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import mi_weight
from midpg_jax.train_state import make_train_step, model_inputs
from scripts.make_aliccp_like import write_aliccp_like

config_flags.DEFINE_config_file('config', 'configs/aliccp.py', 'Training config file.')
flags.DEFINE_integer('generate_aliccp_rows', 0, 'If > 0, first write a random Ali-CCP-format '
                     'training file of this many rows into config.data.manual_dir.')
flags.DEFINE_integer('batches', 300, 'Pipeline batches to time.')
flags.DEFINE_integer('steps', 60, 'Train steps to time.')
FLAGS = flags.FLAGS


def rate(fn, count: int, unit_per_item: int) -> float:
  start = time.perf_counter()
  done = fn(count)
  return done * unit_per_item / (time.perf_counter() - start)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  if FLAGS.generate_aliccp_rows > 0:
    start = time.perf_counter()
    write_aliccp_like(config.data.manual_dir, FLAGS.generate_aliccp_rows)
    path = os.path.join(config.data.manual_dir, 'ali_ccp_train.csv')
    print(f'wrote {FLAGS.generate_aliccp_rows:,} rows ({os.path.getsize(path) / 1e6:.0f} MB) to '
          f'{path} in {time.perf_counter() - start:.1f}s')

  start = time.perf_counter()
  dataset = load_dataset(config.data)
  print(f'dataset ready (prepared or reused, loaded, validated) in '
        f'{time.perf_counter() - start:.1f}s')
  train = dataset.splits['train']
  n = len(train['label'])
  batch_size = int(config.train.batch_size)
  print(f'{n:,} training rows, batch {batch_size}, columns '
        f'{[(k, type(v).__name__) for k, v in train.items()]}')

  def host_batches(count):
    done = 0
    for epoch in range(count):
      for _ in pipeline.train_batches(train, batch_size, 0, epoch):
        done += 1
        if done == count:
          return done
    return done

  def device_batches(count):
    done = 0
    for b in pipeline.train_batches(train, batch_size, 0, 1):
      jax.block_until_ready(jax.device_put(model_inputs(b)))
      done += 1
      if done == count:
        break
    return done

  def process_share(count, processes=2):  # what process 0 of `processes` reads: its rows only
    done = 0
    for _ in pipeline.train_batches(train, batch_size, 0, 4, process_index=0,
                                    process_count=processes):
      done += 1
      if done == count:
        break
    return done

  host_batches(3)  # touch the pages once
  pipe_rate = rate(host_batches, FLAGS.batches, batch_size)
  share_rate = rate(process_share, FLAGS.batches, batch_size // 2)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
  pipe_dev_rate = rate(device_batches, FLAGS.batches, batch_size)

  _, model, tx, state, _ = trainer.setup(config, dataset)
  step = jax.jit(make_train_step(model, tx, mi_weight(config.model)))
  batches = [jax.device_put(model_inputs(b)) for _, b in
             zip(range(FLAGS.steps), pipeline.train_batches(train, batch_size, 0, 2))]
  state, metrics = step(state, batches[0])  # compile
  jax.block_until_ready(metrics)

  def steps_only(count):
    nonlocal state
    m = None
    for b in batches[:count]:
      state, m = step(state, b)
    jax.block_until_ready(m)
    return min(count, len(batches))

  def full_loop(count):
    nonlocal state
    m, done = None, 0
    it = trainer.prefetch((jax.device_put(model_inputs(b)) for b in
                           pipeline.train_batches(train, batch_size, 0, 3)), 2)
    for b in it:
      state, m = step(state, b)
      done += 1
      if done == count:
        break
    jax.block_until_ready(m)
    return done

  step_rate = rate(steps_only, FLAGS.steps, batch_size)
  loop_rate = rate(full_loop, FLAGS.steps, batch_size)
  print(f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}), model '
        f'{config.model.name}')
  print(f'pipeline (host batches from memory-mapped columns): {pipe_rate:12,.0f} rows/s')
  print(f'pipeline + jax.device_put:                          {pipe_dev_rate:12,.0f} rows/s')
  print(f'one of 2 processes (its half of each batch):        {share_rate:12,.0f} rows/s')
  print(f'peak resident memory after the pipeline runs:       {rss:12.2f} GB '
        f'(training columns: {sum(a.nbytes for a in train.values() if hasattr(a, "nbytes")) / 1e9:.2f} GB'
        ' memory-mapped)')
  print(f'train step alone (batches already on device):       {step_rate:12,.0f} examples/s')
  print(f'trainer loop (pipeline + prefetch thread + step):   {loop_rate:12,.0f} examples/s')
  print(f'pipeline / train step: {pipe_rate / step_rate:.1f}x '
        f'(with device_put: {pipe_dev_rate / step_rate:.1f}x)')


if __name__ == '__main__':
  app.run(main)

"""Two JAX-only sections around the step itself:

* pipeline: the trainer's loop shape at one batch size: batches already on device vs host batches
  put on the device inline vs through the trainer's prefetch thread, and with a host sync
  (fetching the loss) every step.
* vocab sweep: JAX MI-DPG step time vs the size of the largest table (10k-10M rows), dense Adam
  vs the row-sparse LazyAdam path (with and without buffer donation).
"""

from __future__ import annotations

import time

import jax

from midpg_jax.data import load_dataset, pipeline
from benchmarks.speed import report
from benchmarks.speed.jax_side import JaxContender, forget_initial_variables, make_data
from benchmarks.speed.timing import alternate, examples_per_s, stats
from midpg_jax.train_state import model_inputs


def run_pipeline(args, config, results, bs=4096):
  """The trainer's loop shape: where do input and host syncs cost time?"""
  from midpg_jax.stepping import prefetch
  c = config.data.copy_and_resolve_references()
  steps = 2 * args.steps
  c.num_train, c.num_val, c.num_test = bs * steps, 256, 256
  ds = load_dataset(c)
  split = ds.splits['train']
  con = JaxContender('jax', config).build(ds.spec, model_inputs(next(
      pipeline.train_batches(split, bs, 0, 0))))
  on_device = [jax.device_put(model_inputs(b)) for b in pipeline.train_batches(split, bs, 0, 0)]
  state = [con.state]

  def run(kind):
    st = state[0]
    if kind == 'on_device':
      batches = iter(on_device)
    else:
      host = (jax.device_put(model_inputs(b)) for b in pipeline.train_batches(split, bs, 0, 0))
      batches = prefetch(host, 0 if kind == 'inline' else int(config.train.prefetch))
    metrics = []
    for b in batches:
      st, m = con.train_step(st, b)
      if kind == 'prefetch_sync':
        float(m['loss'])  # a host sync per step
      else:
        metrics.append(m)
    jax.block_until_ready((st, metrics))
    state[0] = st

  kinds = ['on_device', 'inline', 'prefetch', 'prefetch_sync']
  for k in kinds:
    run(k)  # warm-up
  times = {k: [] for k in kinds}
  for r in range(args.reps):
    for k in kinds[r % 4:] + kinds[:r % 4]:
      t0 = time.perf_counter()
      run(k)
      times[k].append((time.perf_counter() - t0) / steps)
  labels = {'on_device': 'batches already on device (upper bound)',
            'inline': 'host batches, device_put inline (no prefetch)',
            'prefetch': f'host batches via trainer.prefetch({int(config.train.prefetch)}), '
                        'metrics kept on device',
            'prefetch_sync': 'as prefetch, plus a host sync (float(loss)) every step'}
  results['pipeline'] = {'batch_size': bs, **{k: {'label': labels[k], 'step': stats(v),
                                                  'examples_per_s': examples_per_s(bs, v)}
                                              for k, v in times.items()}}
  for k in kinds:
    e = results['pipeline'][k]
    print(f'  pipeline {k:14s} {e["step"]["median_ms"]:8.1f} ms/step '
          f'{e["examples_per_s"]:10,.0f} ex/s  ({labels[k]})', flush=True)
  report.save(args, results)


def run_vocab_sweep(args, config, results):
  bs = args.sweep_batch
  for vocab in args.vocab_sizes:
    ds, host = make_data(config, bs, vocab0=vocab)
    cons = [JaxContender('dense', config, train_overrides={'sparse_embeddings': False}),
            JaxContender('sparse', config, train_overrides={'sparse_embeddings': True},
                         donate=False),
            JaxContender('sparse_donated', config, train_overrides={'sparse_embeddings': True},
                         donate=True)]
    for c in cons:
      c.build(ds.spec, host[0])
      c.stage(host)
      c.train(2)
    times = alternate(cons, 'train', args.steps, max(3, args.reps - 2))
    entry = {c.name: stats(times[c.name]) for c in cons}
    results['vocab_sweep'][str(vocab)] = {'batch_size': bs, 'table_rows': vocab,
                                          'embed_dim': int(config.model.embed_dim), **entry}
    print(f'  vocab {vocab:>10,}: ' + '  '.join(
        f'{c.name} {entry[c.name]["median_ms"]:8.1f} ms' for c in cons), flush=True)
    del cons
    forget_initial_variables()  # the tables of this vocabulary
    report.save(args, results)

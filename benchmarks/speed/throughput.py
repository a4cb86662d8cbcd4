"""The MI-DPG section: training and inference throughput of JAX MI-DPG, the JAX plain backbone,
PyTorch eager and torch.compile (and the other JAX scenario-matmul paths), achieved FLOP/s, and
the peak memory of each primary contender in its own subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from benchmarks.speed import flops as flops_lib
from benchmarks.speed import machine, report
from benchmarks.speed.jax_side import JaxContender, make_data
from benchmarks.speed.timing import alternate, build_once, examples_per_s, stats
from benchmarks.speed.torch_side import TorchContender

PRIMARY = ('jax', 'jax_backbone', 'torch_eager', 'torch_compile')  # inference + memory measured


def make_contenders(args, config) -> list:
  sparse = bool(config.train.get('sparse_embeddings', False))
  path = config.model.scenario_matmul
  cs = [JaxContender('jax', config, dtype=args.dtype,
                     label=f'JAX MI-DPG ({path}{", row-sparse emb." if sparse else ""})'),
        JaxContender('jax_backbone', config, {'name': 'mlp'}, dtype=args.dtype,
                     label='JAX plain backbone (mlp)')]
  if machine.torch is not None and not args.no_torch:
    cs.append(TorchContender('torch_eager', config, dtype=args.dtype,
                             label='PyTorch eager MI-DPG' + (' (SparseAdam emb.)' if sparse
                                                             else '')))
    if not args.no_compile:
      cs.append(TorchContender('torch_compile', config, compiled=True, dtype=args.dtype,
                               label='torch.compile MI-DPG'))
  if not args.no_paths:
    from midpg_jax.models.midpg import SCENARIO_MATMULS
    for other in SCENARIO_MATMULS:
      if other != path:
        cs.append(JaxContender(f'jax_{other}', config, {'scenario_matmul': other},
                               dtype=args.dtype, label=f'JAX MI-DPG ({other})'))
    if args.dtype == 'f32':
      cs.append(JaxContender(f'jax_{"dense" if sparse else "sparse"}_emb', config,
                             train_overrides={'sparse_embeddings': not sparse},
                             label=f'JAX MI-DPG ({path}, '
                             f'{"dense Adam" if sparse else "row-sparse LazyAdam"} emb.)'))
  return cs


def run_throughput(args, config, contenders, results):
  primary = [c for c in contenders if c.name in PRIMARY]
  for bs in args.batch_sizes:
    print(f'\n== batch {bs}', flush=True)
    ds, host = make_data(config, bs)
    for c in contenders:
      build_once(c, ds.spec, host[0])
    results['flops']['analytic'] = flops_lib.analytic_flops(config, ds.spec)
    for c in contenders:
      c.stage(host)
      w = c.warmup()
      print(f'  warm-up {c.name}: {w:.1f}s (incl. compilation)', flush=True)
      results['compile_s'].setdefault(c.name, {})[str(bs)] = w
    for c in contenders:
      if c.name in ('jax', 'jax_backbone'):
        flops = flops_lib.xla_flops(c.compiled_train_step())
        if flops:
          results['flops'].setdefault('xla_cost_analysis_train_per_example', {}).setdefault(
              c.name, {})[str(bs)] = flops / bs
    train = alternate(contenders, 'train', args.steps, args.reps)
    infer = alternate(primary, 'predict', args.steps, args.reps)
    for c in contenders:
      entry = {'label': c.label, 'train_step': stats(train[c.name]),
               'train_examples_per_s': examples_per_s(bs, train[c.name])}
      if c.name in infer:
        entry['predict_step'] = stats(infer[c.name])
        entry['predict_examples_per_s'] = examples_per_s(bs, infer[c.name])
      results['throughput'].setdefault(str(bs), {})[c.name] = entry
      print(f'  {c.name:18s} train {entry["train_step"]["median_ms"]:9.1f} ms '
            f'[{entry["train_step"]["p25_ms"]:.1f}-{entry["train_step"]["p75_ms"]:.1f}] '
            f'{entry["train_examples_per_s"]:11,.0f} ex/s' +
            (f'   predict {entry["predict_examples_per_s"]:11,.0f} ex/s'
             if 'predict_step' in entry else ''), flush=True)
    for c in contenders:
      c.batches = None
    report.save(args, results)


def memory_names(args) -> list[str]:
  no_torch = machine.torch is None or args.no_torch
  return [n for n in PRIMARY if not (n.startswith('torch') and no_torch)
          and not (n == 'torch_compile' and (args.no_compile or args.quick))]


def run_memory(args, results, batch_sizes, names):
  """Peak RSS of a fresh subprocess per (contender, batch size): `--probe_memory NAME`."""
  for bs in batch_sizes:
    for name in names:
      cmd = [sys.executable, '-m', 'benchmarks.speed', '--probe_memory', name, '--probe_batch',
             str(bs), '--config', args.config, '--dtype', args.dtype,
             '--threads', str(args.threads)]
      t0 = time.perf_counter()
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
      line = [l for l in proc.stdout.splitlines() if l.startswith('MEMORY ')]
      if proc.returncode or not line:
        print(f'  memory {name} @ {bs}: probe failed: {proc.stderr[-400:]}', flush=True)
        continue
      mem = json.loads(line[-1][len('MEMORY '):])
      results['memory'].setdefault(str(bs), {})[name] = mem
      print(f'  memory {name:14s} @ {bs}: peak RSS {mem["peak_rss_mb"]:8.0f} MB '
            f'(+{mem["peak_rss_mb"] - mem["base_rss_mb"]:.0f} MB over the process before the '
            f'model; {time.perf_counter() - t0:.0f}s)', flush=True)
  report.save(args, results)


def probe_memory(args, config):
  """In the subprocess: build and run one contender, print its memory as one `MEMORY {json}`."""
  bs = args.probe_batch
  ds, host = make_data(config, bs)
  base = machine.rss_mb()
  c = {c.name: c for c in make_contenders(args, config)}[args.probe_memory]
  machine.torch_reset_peak()
  c.build(ds.spec, host[0])
  c.stage(host)
  c.warmup()
  c.train(3)
  c.predict(3)
  peak, how = machine.peak_rss_mb()
  out = {'base_rss_mb': base, 'peak_rss_mb': peak, 'end_rss_mb': machine.rss_mb(), 'measure': how}
  device_peak = (machine.jax_device_peak_mb() if c.framework == 'jax'
                 else machine.torch_device_peak_mb())
  if device_peak is not None:
    out['device_peak_mb'] = device_peak
  print('MEMORY ' + json.dumps(out), flush=True)

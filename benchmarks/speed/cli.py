"""Command line of the speed benchmark (`python -m midpg_jax.speed`, `midpg-speed`).

Everything runs in one process and the contenders *alternate* (each repetition times every
contender once, in a rotating order), so a noisy, shared machine slows them alike and the ratios
hold. Thread counts are set equal for both frameworks before either starts, and printed:
`--threads` (default: all cores) -> XLA `--xla_cpu_multi_thread_eigen=true
intra_op_parallelism_threads=N`, `torch.set_num_threads(N)`, `OMP_NUM_THREADS=N`.

Sections (written to `--out`, default runs/speed/: speed.json, speed.md, speed.png):
  MI-DPG (default)  throughput, FLOP/s vs the f32 matmul rate, pipeline, peak memory (throughput.py)
  --vocab-sweep     step time vs embedding-table size, dense vs row-sparse Adam (loops.py)
  --models a,b      zoo models vs their PyTorch references (zoo.py)
  --suite gpu       MI-DPG + zoo, 4k-64k, f32 and bf16, device memory (gpu_suite.py)
  --profile         where the JAX MI-DPG step's time goes, per XLA op, vs the matmul rate
                    (profile.py); `--profile --models ple`: that model's step
  --zoo-table       every model's step vs Shared-Bottom's, with FLOPs per example (zoo_table.py)
"""

from __future__ import annotations

import argparse
import os
import time


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog='python -m midpg_jax.speed',
                              description='Speed of the JAX models against PyTorch eager and '
                              'torch.compile', epilog=__doc__.split('\n\n', 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='batch 1k and 4k, fewer repetitions')
  p.add_argument('--batch-sizes', default=None, help='comma-separated; default 1024,4096,16384,'
                 '65536 (quick: 1024,4096; --suite gpu: 4096,16384,65536)')
  p.add_argument('--reps', type=int, default=None, help='timed repetitions (default 7; quick 5)')
  p.add_argument('--steps', type=int, default=None, help='steps per repetition (default 3)')
  p.add_argument('--threads', type=int, default=0, help='threads per framework (0 = all cores)')
  p.add_argument('--dtype', choices=('f32', 'bf16'), default='f32')
  p.add_argument('--config', default=os.path.join('configs', 'default.py'))
  p.add_argument('--out', default=os.path.join('runs', 'speed'))
  p.add_argument('--no-torch', action='store_true', help='JAX contenders only')
  p.add_argument('--no-compile', action='store_true', help='skip torch.compile')
  p.add_argument('--no-paths', action='store_true', help='skip the other scenario-matmul paths')
  p.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
  p.add_argument('--no-pipeline', action='store_true', help='skip the pipeline section')
  p.add_argument('--vocab-sweep', action='store_true', help='also step time vs table size')
  p.add_argument('--vocab-sizes', default=None,
                 help='comma-separated rows of the largest table for --vocab-sweep (default '
                 '10000,100000,1000000,10000000; quick: up to 1000000)')
  p.add_argument('--sweep-batch', type=int, default=4096)
  p.add_argument('--matmul-size', type=int, default=2048, help='n of the n x n peak matmul')
  p.add_argument('--models', default=None,
                 help='comma-separated models with PyTorch references (midpg,star,mmoe,ple,'
                 'shared_bottom): each model\'s JAX train step vs its PyTorch reference, eager '
                 'and torch.compile (with --suite gpu: the suite\'s models)')
  p.add_argument('--zoo-routings', default='',
                 help='for --models, also time the JAX models with these other '
                 'model.scenario_matmul values (comma-separated; ratios stay for the config\'s)')
  p.add_argument('--zoo-loops', default='subset',
                 help='the PyTorch references\' scenario loops for --models: subset, masked or '
                 'both (comma-separated)')
  p.add_argument('--suite', choices=('gpu',), default=None,
                 help='gpu: MI-DPG and the zoo at batch 4k-64k, f32 and bf16, with device memory')
  p.add_argument('--dry-run', action='store_true',
                 help='with --suite: tiny sizes, 1 repetition, to test the code paths (any device)')
  p.add_argument('--profile', action='store_true',
                 help='where the JAX MI-DPG train step at --sweep-batch spends its time, per XLA '
                 'op, beside the f32 matmul rate in the same run (profile.py)')
  p.add_argument('--zoo-table', action='store_true',
                 help='every model (or those of --models) vs the per-scenario-tower Shared-Bottom: '
                 'JAX train step at --sweep-batch and FLOPs per example (zoo_table.py)')
  p.add_argument('--probe-memory', default=None, help=argparse.SUPPRESS)  # internal
  p.add_argument('--probe-batch', type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.dry_run and not args.suite:
    p.error('--dry-run goes with --suite gpu')
  args.explicit_batch_sizes = ([int(b) for b in args.batch_sizes.split(',')]
                               if args.batch_sizes else None)
  args.batch_sizes = args.explicit_batch_sizes or (
      [1024, 4096] if args.quick else [1024, 4096, 16384, 65536])
  args.reps = args.reps or (5 if args.quick else 7)
  args.steps = args.steps or 3
  args.vocab_sizes = [int(v) for v in (args.vocab_sizes or (
      '10000,100000,1000000' if args.quick else '10000,100000,1000000,10000000')).split(',')]
  return args


def set_threads(threads: int) -> int:
  """Equal intra-op threads for XLA and torch; must run before either starts."""
  n = threads or os.cpu_count() or 1
  flags = os.environ.get('XLA_FLAGS', '')
  if 'intra_op_parallelism_threads' not in flags:
    flags += f' --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={n}'
  os.environ['XLA_FLAGS'] = flags.strip()
  os.environ.setdefault('OMP_NUM_THREADS', str(n))
  os.environ.setdefault('MKL_NUM_THREADS', str(n))
  # Idle OpenMP threads sleep instead of spinning. On a shared, oversubscribed machine torch's
  # default (spin) made its steps 10-20x slower (every barrier waits on a preempted spinner);
  # measured 1.8 s -> 0.08 s per MI-DPG step at batch 4096 on 2 busy cores.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  return n


def load_config(path: str):
  import importlib.util
  if not os.path.exists(path):
    raise SystemExit(f'error: --config {path}: no such file')
  spec = importlib.util.spec_from_file_location('speed_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv=None):
  args = parse_args(argv)
  args.threads = set_threads(args.threads)
  # Only now JAX and torch start, with the thread settings above.
  from midpg_jax.speed import machine, report
  if machine.torch is not None:
    machine.torch.set_num_threads(args.threads)
  config = load_config(args.config)
  if args.probe_memory:
    from midpg_jax.speed.throughput import probe_memory
    return probe_memory(args, config)
  results = {'args': vars(args), 'device': machine.device_info(args.threads), 'throughput': {},
             'compile_s': {}, 'flops': {}, 'memory': {}, 'vocab_sweep': {}, 'pipeline': {},
             'config': {'model': config.model.to_dict(), 'train': config.train.to_dict()}}
  d = results['device']
  print(f"device: {d.get('cpu_model')} | JAX {d['jax_backend']} {d['jax_devices']} | "
        f"torch {d.get('torch', 'not installed')} on {d.get('torch_device', '-')} | threads: "
        f"XLA intra-op {args.threads} (XLA_FLAGS='{d['xla_flags']}'), torch "
        f"{d.get('torch_threads', '-')} | load {d.get('load_avg_1m_start', '?')}", flush=True)
  t_start = time.perf_counter()
  if args.suite == 'gpu':
    from midpg_jax.speed.gpu_suite import run_suite
    body = run_suite(args, config, results)
  elif args.zoo_table:  # before --models: `--models` picks the table's models
    from midpg_jax.speed.zoo_table import run_zoo_table
    body = run_zoo_table(args, config, results)
  elif args.profile:  # before --models: `--profile --models ple` profiles that model
    from midpg_jax.speed.profile import run_profile
    body = run_profile(args, config, results)
  elif args.models:
    from midpg_jax.speed.zoo import run_models
    run_models(args, config, results, args.models.split(','), args.dtype)
    body = report.models_markdown(results)
  else:
    body = run_midpg(args, config, results)
  results['total_s'] = time.perf_counter() - t_start
  d['load_avg_1m_end'] = os.getloadavg()[0]
  md = report.markdown_header(results) + body
  report.save(args, results)
  with open(os.path.join(args.out, 'speed.md'), 'w') as f:
    f.write(md)
  print('\n' + md)
  print(f"wrote {args.out}/speed.json, speed.md ({results['total_s']:.0f}s)")


def run_midpg(args, config, results) -> str:
  """The default sections: MI-DPG throughput, pipeline, memory, vocabulary sweep, plot."""
  from midpg_jax.speed import flops, loops, report, throughput
  results['matmul'] = flops.matmul_rate(args.matmul_size, args.reps)
  print(f"f32 matmul {args.matmul_size}^2: " + ', '.join(
      f"{k} {v['gflops_median']:.1f} GFLOP/s" for k, v in results['matmul'].items()
      if isinstance(v, dict)), flush=True)
  contenders = throughput.make_contenders(args, config)
  throughput.run_throughput(args, config, contenders, results)
  del contenders
  if not args.no_pipeline:
    print('\n== pipeline', flush=True)
    loops.run_pipeline(args, config, results)
  if not args.no_memory:
    print('\n== peak memory (one subprocess per contender)', flush=True)
    throughput.run_memory(args, results, [4096] if args.quick else args.batch_sizes,
                          throughput.memory_names(args))
  if args.vocab_sweep:
    print('\n== vocab sweep', flush=True)
    loops.run_vocab_sweep(args, config, results)
  report.plot(args, results)
  return report.markdown_body(results)

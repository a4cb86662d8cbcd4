"""Command line of the speed benchmark (`python -m benchmarks.speed` from the checkout's root).

Everything runs in one process and the contenders *alternate* (each repetition times every
contender once, in a rotating order), so a noisy, shared machine slows them alike and the ratios
hold. Thread counts are set equal for both frameworks before either starts, and printed:
`--threads` (default: all cores) -> XLA `--xla_cpu_multi_thread_eigen=true
intra_op_parallelism_threads=N`, `torch.set_num_threads(N)`, `OMP_NUM_THREADS=N`.

Sections (written to `--out`, default runs/speed/: speed.json, speed.md, speed.png):
  MI-DPG (default)  throughput, FLOP/s vs the f32 matmul rate, pipeline, peak memory (throughput.py)
  --vocab_sweep     step time vs embedding-table size, dense vs row-sparse Adam (loops.py)
  --models a,b      zoo models vs their PyTorch references (zoo.py)
  --suite gpu       MI-DPG + zoo, 4k-64k, f32 and bf16, device memory (gpu_suite.py)
  --profile         where the JAX MI-DPG step's time goes, per XLA op, vs the matmul rate
                    (profile.py); `--profile --models ple`: that model's step
  --zoo_table       every model's step vs Shared-Bottom's, with FLOPs per example (zoo_table.py)
"""

from __future__ import annotations

import os
import time
import types

from absl import flags

from midpg_jax import cli

cli.define_config_flag('Config of the models and the data (default: the packaged default, MI-DPG '
                       'on the built-in data).')
flags.DEFINE_bool('quick', False, 'Batch 1k and 4k, fewer repetitions.')
flags.DEFINE_list('batch_sizes', None, 'Default 1024,4096,16384,65536 (quick: 1024,4096; '
                  '--suite gpu: 4096,16384,65536).')
flags.DEFINE_integer('reps', None, 'Timed repetitions (default 7; quick 5).')
flags.DEFINE_integer('steps', None, 'Steps per repetition (default 3).')
flags.DEFINE_integer('threads', 0, 'Threads per framework (0 = all cores).')
flags.DEFINE_enum('dtype', 'f32', ['f32', 'bf16'], 'Compute dtype of the models.')
flags.DEFINE_string('out', os.path.join('runs', 'speed'), 'Folder of speed.json, speed.md, '
                    'speed.png.')
flags.DEFINE_bool('no_torch', False, 'JAX contenders only.')
flags.DEFINE_bool('no_compile', False, 'Skip torch.compile.')
flags.DEFINE_bool('no_paths', False, 'Skip the other scenario-matmul paths.')
flags.DEFINE_bool('no_memory', False, 'Skip the peak-memory subprocesses.')
flags.DEFINE_bool('no_pipeline', False, 'Skip the pipeline section.')
flags.DEFINE_bool('vocab_sweep', False, 'Also step time vs table size.')
flags.DEFINE_list('vocab_sizes', None, 'Rows of the largest table for --vocab_sweep (default '
                  '10000,100000,1000000,10000000; quick: up to 1000000).')
flags.DEFINE_integer('sweep_batch', 4096, 'Batch of --vocab_sweep, --profile and --zoo_table.')
flags.DEFINE_integer('matmul_size', 2048, 'n of the n x n peak matmul.')
flags.DEFINE_string('models', None, 'Comma-separated models with PyTorch references (midpg, star, '
                    'mmoe, ple, shared_bottom): each model\'s JAX train step vs its PyTorch '
                    'reference, eager and torch.compile (with --suite gpu: the suite\'s models).')
flags.DEFINE_string('zoo_routings', '', 'For --models, also time the JAX models with these other '
                    'model.scenario_matmul values (comma-separated).')
flags.DEFINE_string('zoo_loops', 'subset', 'The PyTorch references\' scenario loops for --models: '
                    'subset, masked or both (comma-separated).')
flags.DEFINE_enum('suite', None, ['gpu'], 'gpu: MI-DPG and the zoo at batch 4k-64k, f32 and bf16, '
                  'with device memory.')
flags.DEFINE_bool('dry_run', False, 'With --suite: tiny sizes, 1 repetition, to test the code '
                  'paths (any device).')
flags.DEFINE_bool('profile', False, 'Where the JAX MI-DPG train step at --sweep_batch spends its '
                  'time, per XLA op, beside the f32 matmul rate in the same run (profile.py).')
flags.DEFINE_bool('zoo_table', False, 'Every model (or those of --models) vs the per-scenario-'
                  'tower Shared-Bottom: JAX train step at --sweep_batch and FLOPs per example.')
# Internal: the peak-memory subprocess of one contender (throughput.run_memory).
flags.DEFINE_string('probe_memory', None, 'Internal.')
flags.DEFINE_integer('probe_batch', 0, 'Internal.')
FLAGS = flags.FLAGS


def parse_args():
  """The benchmark's settings from the flags, with their defaults filled in, as one namespace."""
  if FLAGS.dry_run and not FLAGS.suite:
    raise flags.ValidationError('--dry_run goes with --suite gpu')
  args = types.SimpleNamespace(**{f.name: f.value for f in FLAGS.get_flags_for_module(__name__)})
  args.config = cli.config_file_name()
  args.explicit_batch_sizes = [int(b) for b in args.batch_sizes] if args.batch_sizes else None
  args.batch_sizes = args.explicit_batch_sizes or (
      [1024, 4096] if args.quick else [1024, 4096, 16384, 65536])
  args.reps = args.reps or (5 if args.quick else 7)
  args.steps = args.steps or 3
  args.vocab_sizes = [int(v) for v in (args.vocab_sizes or (
      '10000,100000,1000000' if args.quick else '10000,100000,1000000,10000000').split(','))]
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


def main(argv):
  del argv
  args = parse_args()
  args.threads = set_threads(args.threads)
  # Only now JAX and torch start, with the thread settings above.
  from benchmarks.speed import machine, report
  if machine.torch is not None:
    machine.torch.set_num_threads(args.threads)
  config = cli.config_from_flags()
  if args.probe_memory:
    from benchmarks.speed.throughput import probe_memory
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
    from benchmarks.speed.gpu_suite import run_suite
    body = run_suite(args, config, results)
  elif args.zoo_table:  # before --models: `--models` picks the table's models
    from benchmarks.speed.zoo_table import run_zoo_table
    body = run_zoo_table(args, config, results)
  elif args.profile:  # before --models: `--profile --models ple` profiles that model
    from benchmarks.speed.profile import run_profile
    body = run_profile(args, config, results)
  elif args.models:
    from benchmarks.speed.zoo import run_models
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
  from benchmarks.speed import flops, loops, report, throughput
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


def run() -> None:
  """`python -m benchmarks.speed`: the package's XLA flags and one line per mistake (cli.run)."""
  cli.run(main)

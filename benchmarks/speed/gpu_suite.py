"""The accelerator suite (`--suite gpu`): MI-DPG and every zoo model with a PyTorch reference, at
batch 4k-64k, in float32 and bf16, JAX vs PyTorch eager vs torch.compile on the same device, with
device memory and the device's matmul rate per dtype.

Not yet run on a GPU (no accelerator was lent while it was written). `--dry_run` walks the same
code paths at tiny sizes on any backend (the CPU included, where the device-memory probes report
what a CPU has: XLA's plan of each step, no device peak), so the suite is tested without a GPU.
"""

from __future__ import annotations

from benchmarks.speed import flops, machine, report
from benchmarks.speed.zoo import run_models

MODELS = ('midpg', 'star', 'mmoe', 'ple', 'shared_bottom')
BATCH_SIZES = (4096, 16384, 65536)
DTYPES = ('f32', 'bf16')
DRY_RUN_BATCH_SIZES = (128,)


def plan(args) -> dict:
  """What the suite runs: models, batch sizes, dtypes, repetitions (smaller with --dry_run)."""
  models = args.models.split(',') if args.models else list(MODELS)
  if args.dry_run:
    return {'models': models, 'batch_sizes': list(args.explicit_batch_sizes or DRY_RUN_BATCH_SIZES),
            'dtypes': list(DTYPES), 'reps': 1, 'steps': 1, 'matmul_size': 64}
  return {'models': models, 'batch_sizes': list(args.explicit_batch_sizes or BATCH_SIZES),
          'dtypes': list(DTYPES), 'reps': args.reps, 'steps': args.steps,
          'matmul_size': max(args.matmul_size, 8192 if machine.on_accelerator() else 0)}


def run_suite(args, config, results) -> str:
  """Runs the suite into results['suite_f32'], results['suite_bf16']; returns its markdown."""
  if not machine.on_accelerator() and not args.dry_run:
    raise SystemExit('--suite gpu: the JAX backend is cpu, not an accelerator; run it on a GPU, '
                     'or add --dry_run to walk its code paths at tiny sizes here')
  p = plan(args)
  args.reps, args.steps = p['reps'], p['steps']
  results['suite'] = {**p, 'dry_run': bool(args.dry_run),
                      'jax_device': results['device']['jax_devices'][0],
                      'torch_device': results['device'].get('torch_device')}
  md = []
  for dtype in p['dtypes']:
    rate = results.setdefault('matmul_by_dtype', {})[dtype] = flops.matmul_rate(
        p['matmul_size'], p['reps'], dtype)
    print(f"{dtype} matmul {p['matmul_size']}^2: " + ', '.join(
        f"{k} {v['gflops_median']:.1f} GFLOP/s" for k, v in rate.items()
        if isinstance(v, dict)), flush=True)
    run_models(args, config, results, p['models'], dtype, key=f'suite_{dtype}',
               batch_sizes=p['batch_sizes'], memory=True)
    md += [f'\n### {dtype}' + (' (dry run: tiny sizes, not a measurement)' if args.dry_run
                               else ''), report.models_markdown(results, f'suite_{dtype}')]
  return '\n'.join(md)

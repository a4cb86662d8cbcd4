"""Every model's JAX train step against the per-scenario-tower Shared-Bottom of the same widths
(`--zoo_table`, issue 10 item 2), with FLOPs per example, to tell a model that is slow because it
computes more from one that computes slowly.

All models train in one alternating run at one batch size (`--sweep_batch`, default 4096), so the
ratios hold on a loaded machine. Per model: the step time, its ratio to Shared-Bottom's, the
forward matmul FLOPs per example read from the model's jaxpr (`flops.model_forward_flops`: every
per-scenario matmul counted once per row), XLA's FLOPs of the compiled step per example (tile
padding, S-fold paths and weight generation included), and `step ratio / FLOP ratio`: how much
slower than its FLOPs say a model runs, relative to Shared-Bottom (> 2 asks for a profile:
`--profile --models NAME`). An n x n f32 matmul (`--matmul_size`) alternates with the models, so
each model's achieved rate (3x its forward FLOPs per example) is also a fraction of this machine's
matmul rate in the same run: comparable between runs (e.g. with other XLA_FLAGS) on a loaded
machine.
"""

from __future__ import annotations

import time

from benchmarks.speed import flops as flops_lib
from benchmarks.speed.jax_side import JaxContender, make_data
from benchmarks.speed.profile import MatmulContender
from benchmarks.speed.timing import alternate, build_once, stats

REFERENCE = 'shared_bottom'
STEP_LIMIT, FLOPS_LIMIT = 3.0, 2.0  # the targets: step vs Shared-Bottom, vs its FLOPs


def table_models(args) -> list[str]:
  from midpg_jax.models import model_names
  chosen = [m for m in (args.models or '').split(',') if m] or model_names()
  unknown = set(chosen) - set(model_names())
  if unknown:
    raise SystemExit(f'--zoo_table: unknown models {sorted(unknown)}; choose from {model_names()}')
  return [REFERENCE] + [m for m in chosen if m != REFERENCE]


def run_zoo_table(args, config, results) -> str:
  bs = args.sweep_batch
  ds, host = make_data(config, bs)
  contenders = [JaxContender(name, config, {'name': name}, dtype=args.dtype)
                for name in table_models(args)]
  rows = {}
  for c in contenders:
    build_once(c, ds.spec, host[0])
    c.stage(host)
    t0 = time.perf_counter()
    c.train(1)  # compiles the train step only (the table times no inference)
    print(f'  warm-up {c.name}: {time.perf_counter() - t0:.1f}s (incl. compilation)', flush=True)
    variables = {'params': c.state.params, **c.state.model_state}
    xla = flops_lib.xla_flops(c.compiled_train_step())
    rows[c.name] = {'forward_flops_per_example': flops_lib.model_forward_flops(
        c.config.model, ds.spec, host[0], variables),
                    'xla_train_flops_per_example': xla / bs if xla else None}
  matmul = MatmulContender(args.matmul_size)
  matmul.train(2)
  times = alternate(contenders + [matmul], 'train', args.steps, args.reps)
  matmul_gflops = 2 * matmul.n ** 3 / (stats(times['matmul'])['median_ms'] / 1e3) / 1e9
  ref_ms = stats(times[REFERENCE])['median_ms']
  ref_flops = rows[REFERENCE]['forward_flops_per_example']
  for c in contenders:
    r = rows[c.name]
    r['train_step'] = stats(times[c.name])
    r['step_vs_shared_bottom'] = r['train_step']['median_ms'] / ref_ms
    r['flops_vs_shared_bottom'] = r['forward_flops_per_example'] / ref_flops
    r['slowdown_vs_flops'] = r['step_vs_shared_bottom'] / r['flops_vs_shared_bottom']
    r['train_gflops'] = bs * 3 * r['forward_flops_per_example'] / r['train_step']['median_ms'] / 1e6
    r['fraction_of_matmul'] = r['train_gflops'] / matmul_gflops
  results['zoo_table'] = {'batch_size': bs, 'reference': REFERENCE, 'models': rows,
                          'matmul_n': matmul.n, 'matmul_gflops': matmul_gflops}
  return zoo_table_markdown(results['zoo_table'])


def zoo_table_markdown(t: dict) -> str:
  lines = ['', f"Train step at batch {t['batch_size']} vs the per-scenario-tower Shared-Bottom "
           '(same widths), all models alternating in one run. FLOPs: forward matmuls per example '
           "from the model's jaxpr (x3 for training); XLA: the compiled step's FLOPs per example. "
           f'Flagged: step > {STEP_LIMIT:g}x Shared-Bottom (*) or > {FLOPS_LIMIT:g}x slower than '
           f"its FLOPs say (**). f32 matmul {t['matmul_n']}^2 in the same alternation: "
           f"{t['matmul_gflops']:.1f} GFLOP/s.", '',
           '| model | train step ms (median [p25-p75]) | vs Shared-Bottom | fwd FLOPs / example | '
           'FLOPs vs Shared-Bottom | XLA train FLOPs / example | step ratio / FLOP ratio | '
           'train GFLOP/s (share of matmul rate) |',
           '|---|---|---|---|---|---|---|---|']
  for name, r in t['models'].items():
    s = r['train_step']
    flag = ('*' if r['step_vs_shared_bottom'] > STEP_LIMIT else '') + \
        ('**' if r['slowdown_vs_flops'] > FLOPS_LIMIT else '')
    xla = r['xla_train_flops_per_example']
    lines.append(f"| {name}{' ' + flag if flag else ''} | {s['median_ms']:.1f} "
                 f"[{s['p25_ms']:.1f}-{s['p75_ms']:.1f}] | "
                 f"{r['step_vs_shared_bottom']:.2f}x | {r['forward_flops_per_example']:,.0f} | "
                 f"{r['flops_vs_shared_bottom']:.2f}x | {f'{xla:,.0f}' if xla else '-'} | "
                 f"{r['slowdown_vs_flops']:.2f} | {r['train_gflops']:.1f} "
                 f"({r['fraction_of_matmul']:.0%}) |")
  return '\n'.join(lines) + '\n'

"""The scaling tables of docs/scaling.md, from midpg-compile's numbers (midpg_jax/aot): run in the
compile-only environment (`make compile-env`):

  .venv-compile/bin/python scripts/scaling_tables.py [--out docs/scaling.md] [--json runs/scaling.json]

0. MI-DPG beside its backbone on v5e:4x4 (also the README's table, rewritten in place).
1. Weak scaling: every model at 4,096 rows per chip on v5e slices of 1 to 256 chips: per-chip
   FLOPs and memory must stay flat; the gradients' all-reduce bytes shown. bfloat16 compute beside
   float32 on v5e:4x4.
2. Scenario paths on accelerators: each path's roofline step time on v5e:4x4 and h100:8 at 4 and
   32 scenarios (what 'auto' picks there).
3. Embedding capacity: the largest first-table vocabulary (x 16) whose MI-DPG train step fits a
   v5e chip's HBM on v5e:4x4, tables row-sharded on the mesh's `model` axis of 1, 4 and 16.
Takes ~20 min on 2 cores (each compile 2-15 s). Numbers: XLA's cost and memory analyses of the
compiled per-device programs; rooflines from midpg_jax/aot/chips.py.
"""

import argparse
import json
import os
import time

import jax

jax.config.update('jax_platforms', 'cpu')

from midpg_jax.aot import targets  # noqa: E402
from midpg_jax.aot.report import report  # noqa: E402
from midpg_jax.aot.steps import DoesNotFitError  # noqa: E402
from midpg_jax.models import model_names  # noqa: E402

SLICES = ('v5e:1x1', 'v5e:4x4', 'v5e:8x8', 'v5e:16x16')
PER_CHIP = 4096
PATHS = ('tiled', 'ragged', 'onehot', 'masked')
PATH_MODELS = ('midpg', 'shared_bottom')
SCENARIOS = (4, 32)
MIB = 2 ** 20


def base_config():
  from midpg_jax import config
  return config.get_config()


CACHE_FILE = None
CACHE: dict = {}  # compile results by case, kept in --json between runs of the script


def compile_report(target, steps=('train',), **overrides):
  """The train step's numbers for `target` and the config overrides; None if it does not fit."""
  key = f'{target} {sorted(overrides.items())}'
  if key in CACHE:
    return CACHE[key]
  c = base_config()
  for name, value in overrides.items():
    node = c
    *parents, last = name.split('.')
    for p in parents:
      node = node[p]
    node[last] = value
  t0 = time.perf_counter()
  try:
    info = report(targets.parse(target), c, per_chip_batch=PER_CHIP, steps=steps)['steps']['train']
  except DoesNotFitError:
    info = None
  print(f'{target} {overrides}: {time.perf_counter() - t0:.1f}s', flush=True)
  CACHE[key] = info
  with open(CACHE_FILE, 'w') as f:
    json.dump(CACHE, f)
  return info


def footprint(info) -> int:
  m = info['memory']
  return m['argument'] + m['output'] + m['temp'] - m['alias']


BACKBONE_CASES = [('mlp', 'auto', 'float32'), ('midpg', 'tiled', 'float32'),
                  ('midpg', 'onehot', 'float32'), ('midpg', 'tiled', 'bfloat16'),
                  ('midpg', 'onehot', 'bfloat16'), ('shared_bottom', 'tiled', 'float32'),
                  ('shared_bottom', 'onehot', 'float32')]
# The README's "Several devices" shows these rows of the table (it stays under 200 lines).
README_CASES = [BACKBONE_CASES[i] for i in (0, 1, 2, 4, 6)]
README_MARK = '<!-- the table below is written by scripts/scaling_tables.py -->'


def backbone_table(readme=None):
  """MI-DPG beside its backbone (`mlp`) and Shared-Bottom on v5e:4x4, global batch 65,536; with
  `readme`, also rewrites the table under README_MARK in that file."""
  head = ['| model | path | dtype | GFLOP / chip | x mlp | memory / chip (MiB) | all-reduce MiB / '
          'chip | other collectives | roofline ms | examples/s/chip |',
          '|---|---|---|---|---|---|---|---|---|---|']
  by_case = {}
  base = None
  for name, path, dtype in BACKBONE_CASES:
    info = compile_report('v5e:4x4', **{'model.name': name, 'model.scenario_matmul': path,
                                        'model.dtype': dtype})
    flops = info['cost']['flops']
    base = base or flops
    coll = info['collectives']
    other = ', '.join(f'{k} {v["count"]}' for k, v in coll.items() if k != 'all-reduce') or 'none'
    label = 'onehot (auto on TPU)' if path == 'onehot' else path
    by_case[name, path, dtype] = (
        f'| {name} | {label} | {dtype} | {flops / 1e9:.3f} | {flops / base:.2f} | '
        f'{footprint(info) / MIB:.1f} | '
        f'{coll.get("all-reduce", {}).get("bytes", 0) / MIB:.2f} | {other} | '
        f'{info["roofline"]["seconds"] * 1e3:.3f} | '
        f'{info["roofline"]["examples_per_s_per_chip"]:,.0f} |')
  if readme:
    write_readme_table(readme, head + [by_case[c] for c in README_CASES])
  return head + list(by_case.values())


def write_readme_table(path, rows):
  """Replaces the table lines that follow README_MARK in `path`."""
  with open(path) as f:
    lines = f.read().split('\n')
  at = lines.index(README_MARK) + 1
  end = at
  while end < len(lines) and lines[end].startswith('|'):
    end += 1
  lines[at:end] = rows
  with open(path, 'w') as f:
    f.write('\n'.join(lines))


def weak_scaling():
  rows = ['| model | GFLOP / chip: 1 chip | 16 | 64 | 256 | bf16, 16 chips | memory / chip '
          '(MiB), 16 chips: f32 | bf16 | all-reduce MiB / chip: 1 | 16 | 256 | roofline '
          'examples/s/chip, 16 chips f32 |',
          '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for name in model_names():
    f32 = {t: compile_report(t, **{'model.name': name}) for t in SLICES}
    bf16 = compile_report('v5e:4x4', **{'model.name': name, 'model.dtype': 'bfloat16'})
    gflop = [f'{f32[t]["cost"]["flops"] / 1e9:.3f}' for t in SLICES]
    ar = [f'{f32[t]["collectives"].get("all-reduce", {}).get("bytes", 0) / MIB:.2f}'
          for t in ('v5e:1x1', 'v5e:4x4', 'v5e:16x16')]
    gathers = sum(len(f32[t]['batch_all_gathers']) for t in SLICES)
    assert gathers == 0, f'{name}: all-gathers of batch rows'
    rows.append(f'| {name} | ' + ' | '.join(gflop) + f' | {bf16["cost"]["flops"] / 1e9:.3f} | '
                f'{footprint(f32["v5e:4x4"]) / MIB:.1f} | {footprint(bf16) / MIB:.1f} | '
                + ' | '.join(ar) +
                f' | {f32["v5e:4x4"]["roofline"]["examples_per_s_per_chip"]:,.0f} |')
  return rows


def paths_table():
  rows = ['| model | scenarios | target | ' + ' | '.join(f'{p} ms (GFLOP, GiB accessed)'
                                                      for p in PATHS) + ' | fastest |',
          '|---|---|---|' + '---|' * (len(PATHS) + 1)]
  for name in PATH_MODELS:
    for s in SCENARIOS:
      for target in ('v5e:4x4', 'h100:8'):
        cells, ms = [], {}
        for path in PATHS:
          info = compile_report(target, **{'model.name': name, 'model.scenario_matmul': path,
                                           'data.num_scenarios': s})
          ms[path] = info['roofline']['seconds'] * 1e3
          cells.append(f'{ms[path]:.3f} ({info["cost"]["flops"] / 1e9:.2f}, '
                       f'{info["cost"]["bytes_accessed"] / 2 ** 30:.2f})')
        rows.append(f'| {name} | {s} | {target} | ' + ' | '.join(cells) +
                    f' | {min(ms, key=ms.get)} |')
  return rows


def capacity_table():
  """The largest first-table vocabulary whose train step libtpu compiles for the chip (it refuses a
  program whose buffers exceed HBM): memory is linear in the rows, so two sizes give an estimate,
  and a bisection over whole millions of rows between what fits and what does not settles it."""
  hbm = targets.parse('v5e:4x4').chip.hbm_bytes
  rows = ['| mesh (data, model) | MiB / chip at 1M rows | MiB / chip per 1M more rows (1M to the '
          'largest) | '
          'largest vocabulary that fits (x 16, dense Adam) | memory / chip there |',
          '|---|---|---|---|---|']
  million = 1_000_000
  for model_axis in (1, 4, 16):
    mesh = (-1, model_axis)
    def at(millions):
      return compile_report('v5e:4x4', **{'mesh.shape': mesh, 'data.vocab_sizes': (
          millions * million, 20_000, 5_000, 1_000, 200, 50, 20, 10)})
    small, big = at(1), at(2)
    first_slope = footprint(big) - footprint(small)  # bytes per million rows: a first guess
    fits, fails = 2, None
    guess = max(3, int((hbm - footprint(small)) / first_slope) + 1) if first_slope > 0 else 3
    while fails is None or fails - fits > 1:
      trial = guess if fails is None else (fits + fails) // 2
      if at(trial) is None:
        fails = trial
      else:
        fits = trial
        guess = trial * 2 if fails is None else guess
    # XLA's buffer assignment is not linear at small sizes (2M rows can take less than 1M), so
    # the slope reported is the one between 1M rows and the largest that fits.
    slope = (footprint(at(fits)) - footprint(small)) / (fits - 1)
    rows.append(f'| {mesh} | {footprint(small) / MIB:,.1f} | {slope / MIB:,.1f} | '
                f'{fits * million:,} | {footprint(at(fits)) / 2 ** 30:.2f} GiB |')
  return rows


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--out', default='docs/scaling.md')
  p.add_argument('--json', default='runs/scaling.json', help='the compile results, reused by a '
                 'later run (delete it after a change of the code)')
  p.add_argument('--sections', default='backbone,weak,paths,capacity')
  p.add_argument('--readme', default='README.md', help='whose backbone table to rewrite ("" for '
                 'none)')
  args = p.parse_args()
  global CACHE_FILE
  CACHE_FILE = args.json
  os.makedirs(os.path.dirname(os.path.abspath(CACHE_FILE)), exist_ok=True)
  if os.path.exists(CACHE_FILE):
    with open(CACHE_FILE) as f:
      CACHE.update(json.load(f))
  sections = {'backbone': lambda: backbone_table(args.readme), 'weak': weak_scaling,
              'paths': paths_table, 'capacity': capacity_table}
  tables = {k: sections[k]() for k in args.sections.split(',')}
  with open(args.out, 'w') as f:
    f.write(HEADER)
    for k, rows in tables.items():
      f.write(f'## {TITLES[k]}\n\n{NOTES[k]}\n\n' + '\n'.join(rows) + '\n\n')
  print(open(args.out).read())


HEADER = '''# Scaling: per-chip cost on TPU slices and GPUs, compiled here

Written by `scripts/scaling_tables.py` (do not edit by hand): every number is what XLA's cost and
memory analyses say of the *per-device* program that `midpg-compile` builds for a target that is
not attached (compile-only libtpu and the JAX CUDA plugin's deviceless compile, `make
compile-env`). The default config (built-in data: 8 categorical fields, the largest 100,000 ids,
4 dense features, 4 scenarios; hidden 256-128-64; embeddings 16) at 4,096 training rows per chip.
Rooflines (`midpg_jax/aot/chips.py`): the slower of FLOPs at the chip's published bf16 peak and
bytes accessed at its HBM bandwidth, a lower bound of the step time (docs/distributed.md has the
chips table with sources).

'''
TITLES = {'backbone': 'MI-DPG beside its backbone on v5e:4x4 (global batch 65,536)',
          'weak': 'Weak scaling on v5e (4,096 rows per chip)',
          'paths': 'Scenario paths on accelerators: roofline step time',
          'capacity': 'Embedding capacity: the first table row-sharded on `model` (v5e:4x4)'}
NOTES = {
    'backbone': 'Per chip, train step. `mlp` is MI-DPG without modulation (same embeddings and '
                'widths). On TPUs `model.scenario_matmul=auto` takes the one-hot path (S times the '
                'scenario layers\' FLOPs, the fewest bytes moved, see the paths table); `tiled` '
                'is the FLOP-lean path. No all-gather in any of them: each chip computes its own '
                '4,096 rows.',
    'weak': 'Per-chip FLOPs and memory stay flat from 1 to 256 chips: every chip computes its own '
            'rows only; the all-reduce of the gradients (replicated parameters) is the only '
            'collective, its bytes per chip flat too. bfloat16: `--config.model.dtype=bfloat16` '
            '(parameters and optimizer state stay float32).',
    'paths': 'Train step of each `model.scenario_matmul` path, MI-DPG and Shared-Bottom, 4 and 32 '
             'scenarios (the data config\'s `num_scenarios`): roofline ms (GFLOP per chip, GiB '
             'accessed per chip). Every path is memory-bound on these chips at this size.',
    'capacity': 'MI-DPG with its first table of V rows x 16 (the rest as the default), dense Adam: '
                'parameters, both moments and the gradient of a table are split by rows over the '
                'mesh\'s `model` axis. "Fits" is libtpu\'s verdict: it refuses to compile a '
                'program whose buffers exceed the chip\'s HBM (RESOURCE_EXHAUSTED); the largest V '
                'is a bisection over whole millions of rows between a V that compiles and one that '
                'does not. The dense layers are replicated over `model`: at 4,096 rows per chip of '
                'the data axis, mesh (-1, 4) on 16 chips trains 4 x 4,096 rows a step and '
                '(-1, 16) 4,096, the same rows on every chip (the model axis trades data '
                'parallelism for table capacity).'}


if __name__ == '__main__':
  main()

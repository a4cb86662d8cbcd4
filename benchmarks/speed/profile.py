"""Where the JAX MI-DPG train step's time goes (`--profile`): the step timed alternating with this
machine's f32 matmul, its achieved FLOP rate beside that matmul rate, and a per-op profile of the
compiled step, each XLA op classed by what it does (matmul, embedding gather, scatter-add of
embedding gradients, optimizer update, elementwise / reductions, layout copies) and by phase
(forward, backward, optimizer).

The per-op times come from `jax.profiler.trace` (its perfetto JSON: one event per executed XLA
thunk, named by its HLO instruction); the classes from the compiled HLO text (the instruction's
opcode, the ops inside a fusion, and its `op_name` metadata: `transpose(` = backward, `jvp(` =
forward, neither = the optimizer and bookkeeping). XLA's CPU runtime may run independent thunks
concurrently, so per-op sums can exceed the step's wall time; shares are of the summed op time.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax

from benchmarks.speed import flops as flops_lib
from benchmarks.speed.jax_side import JaxContender, make_data
from benchmarks.speed.timing import alternate, stats

_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([\w\-]+)\(')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r'^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')


def hlo_instructions(hlo_text: str) -> dict[str, dict]:
  """{instruction name: {'opcode', 'op_name', 'inner': opcodes of a fusion's computation}}."""
  computations, current, ops = {}, None, []
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m and '=' not in line.split('{')[0]:
      current, ops = m.group(1), []
      computations[current] = ops
      continue
    m = _INSTRUCTION.match(line)
    if m and current is not None:
      calls = _CALLS.search(line)
      op_name = _OP_NAME.search(line)
      ops.append({'name': m.group(1), 'opcode': m.group(2),
                  'calls': calls.group(1) if calls else None,
                  'op_name': op_name.group(1) if op_name else ''})
  out = {}
  for ops in computations.values():
    for op in ops:
      inner = [o['opcode'] for o in computations.get(op['calls'], [])] if op['calls'] else []
      inner_names = [o['op_name'] for o in computations.get(op['calls'], [])] \
          if op['calls'] else []
      out[op['name']] = {'opcode': op['opcode'], 'inner': inner,
                         'op_name': op['op_name'] or next((n for n in inner_names if n), '')}
  return out


_SHAPE_DEF = re.compile(r'%?([\w.\-]+)(?:\s*=\s*|:\s*)[a-z0-9]+\[([\d,]*)\]')
_DOT = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[a-z0-9]+\[([\d,]*)\][^=]*?\sdot\('
                  r'%?([\w.\-]+),.*?lhs_contracting_dims=\{([\d,]*)\}')


def matmul_flops(hlo_text: str) -> dict[str, float]:
  """{instruction name: FLOPs} of each dot, and of each fusion summed over the dots inside it:
  2 x (output elements) x (the contracted size), from the HLO's shapes."""
  dims = lambda text: [int(d) for d in text.split(',') if d]
  shapes = {m.group(1): dims(m.group(2)) for m in _SHAPE_DEF.finditer(hlo_text)}
  own = {}
  for line in hlo_text.splitlines():
    m = _DOT.match(line)
    if m and m.group(3) in shapes:
      lhs = shapes[m.group(3)]
      contracted = 1
      for d in dims(m.group(4)):
        contracted *= lhs[d]
      out = 1
      for d in dims(m.group(2)):
        out *= d
      own[m.group(1)] = 2.0 * out * contracted
  per_computation = collections.Counter()
  current = None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m and '=' not in line.split('{')[0]:
      current = m.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if m and m.group(1) in own and current is not None:
      per_computation[current] += own[m.group(1)]
  out = dict(own)
  for line in hlo_text.splitlines():
    m, calls = _INSTRUCTION.match(line), _CALLS.search(line)
    if m and calls and per_computation.get(calls.group(1)):
      out[m.group(1)] = per_computation[calls.group(1)]
  return out


def classify(op: dict) -> str:
  """What an op does: matmul, gather, scatter, elementwise, copy, other."""
  ops = {op['opcode'], *op['inner']}
  if ops & {'dot', 'convolution'} or op['opcode'].startswith('ynn') or \
     (op['opcode'] == 'custom-call' and 'matmul' in op['op_name']):
    return 'matmul'
  if 'scatter' in ops:
    return 'scatter (embedding gradients)'
  if 'gather' in ops or 'dynamic-slice' in ops:
    return 'gather (embedding lookup)'
  if ops <= {'copy', 'transpose', 'bitcast', 'parameter', 'tuple', 'get-tuple-element',
             'reshape', 'copy-start', 'copy-done'}:
    return 'copy / transpose'
  if ops & {'sort'}:
    return 'sort'
  return 'elementwise / reduction'


def phase(op: dict) -> str:
  name = op['op_name']
  if 'transpose(' in name:
    return 'backward'
  if 'jvp(' in name:
    return 'forward'
  return 'optimizer / other'


def trace_ops(run, steps: int, module: str = 'train_step') -> tuple[dict[str, float], float]:
  """{HLO instruction: summed µs over `steps` calls of `run()`} from a jax.profiler trace (ops of
  the XLA modules whose name contains `module`), and the traced wall time in µs."""
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      t0 = time.perf_counter()
      for _ in range(steps):
        run()
      wall_us = (time.perf_counter() - t0) * 1e6
    (path,) = glob.glob(os.path.join(tmp, '**', 'perfetto_trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  per_op = collections.Counter()
  for e in events:
    args = e.get('args') or {}
    if e.get('ph') == 'X' and 'hlo_op' in args and module in args.get('hlo_module', ''):
      per_op[args['hlo_op']] += float(e.get('dur', 0.0))
  return dict(per_op), wall_us


def _variables(con) -> dict:
  return {'params': con.state.params, **con.state.model_state}


class MatmulContender:
  """An n x n f32 matmul with the contender protocol, to time in the same alternation."""
  name = 'matmul'

  def __init__(self, n: int):
    self.n, self.a = n, jax.random.normal(jax.random.key(0), (n, n))
    self.f = jax.jit(lambda x, y: x @ y)

  def train(self, k):
    for _ in range(k):
      out = self.f(self.a, self.a)
    out.block_until_ready()


def run_profile(args, config, results) -> str:
  """The config's model, or the one model of `--models` (e.g. `--profile --models ple`)."""
  bs = args.sweep_batch
  models = [m for m in (args.models or '').split(',') if m]
  if len(models) > 1:
    raise SystemExit('--profile takes one model in --models')
  mm = MatmulContender(args.matmul_size)
  mm.train(2)
  ds, host = make_data(config, bs)
  con = JaxContender('jax', config, {'name': models[0]} if models else None, dtype='f32')
  model_name = con.config.model.name
  con.build(ds.spec, host[0])
  con.stage(host)
  print(f'  warm-up jax: {con.warmup():.1f}s (incl. compilation)', flush=True)
  times = alternate([con, mm], 'train', args.steps, args.reps)
  step_s, mm_s = stats(times['jax'])['median_ms'] / 1e3, stats(times['matmul'])['median_ms'] / 1e3
  peak = 2 * mm.n ** 3 / mm_s / 1e9
  if model_name == 'midpg':  # the backbone's matmuls, as every earlier MI-DPG measurement
    train_flops = flops_lib.analytic_flops(config, ds.spec)['train_per_example']
  else:  # the zoo: 3x the forward matmuls read from the model's jaxpr
    train_flops = 3 * flops_lib.model_forward_flops(con.config.model, ds.spec, host[0],
                                                    _variables(con))
  compiled = con.compiled_train_step()
  xla_flops = flops_lib.xla_flops(compiled)
  rate = {'model': model_name, 'batch_size': bs, 'step_ms': step_s * 1e3,
          'step': stats(times['jax']),
          'matmul_n': mm.n, 'matmul_gflops': peak,
          'analytic_train_flops_per_example': train_flops,
          'analytic_gflops': bs * train_flops / step_s / 1e9,
          'xla_flops_per_step': xla_flops,
          'xla_gflops': xla_flops / step_s / 1e9 if xla_flops else None}
  rate['analytic_fraction_of_matmul'] = rate['analytic_gflops'] / peak
  rate['xla_fraction_of_matmul'] = rate['xla_gflops'] / peak if xla_flops else None

  hlo = compiled.as_text()
  instructions, op_flops = hlo_instructions(hlo), matmul_flops(hlo)
  traced = args.steps * 2
  per_op, wall_us = trace_ops(lambda: con.train(1), traced)
  total = sum(per_op.values()) or 1.0
  # The matmul ops' own rate, per kind of kernel: YNNPACK fusions vs XLA's other dots.
  kernels = collections.defaultdict(lambda: [0.0, 0.0])  # kind -> [flops, µs]
  for name, us in per_op.items():
    if op_flops.get(name):
      kind = 'ynn fusion' if name.startswith('ynn') else instructions[name]['opcode']
      kernels[kind][0] += op_flops[name] * traced
      kernels[kind][1] += us
  rate['matmul_ops'] = {k: {'gflops': f / us / 1e3, 'share_of_op_time': us / total,
                            'gflop_per_step': f / traced / 1e9}
                        for k, (f, us) in kernels.items() if us}
  by_class, by_phase = collections.Counter(), collections.Counter()
  unknown = 0.0
  for name, us in per_op.items():
    op = instructions.get(name)
    if op is None:
      unknown += us
      continue
    by_class[classify(op)] += us
    by_phase[phase(op)] += us
  top = sorted(per_op.items(), key=lambda kv: -kv[1])[:15]
  results['profile'] = {
      'rate': rate, 'traced_steps': traced, 'traced_wall_ms_per_step': wall_us / 1e3 / traced,
      'summed_op_ms_per_step': total / 1e3 / traced,
      'share_by_class': {k: v / total for k, v in by_class.most_common()},
      'share_by_phase': {k: v / total for k, v in by_phase.most_common()},
      'share_unmatched': unknown / total,
      'top_ops': [{'op': n, 'share': us / total, 'ms_per_step': us / 1e3 / traced,
                   'gflops': op_flops[n] * traced / us / 1e3 if op_flops.get(n) else None,
                   'class': classify(instructions[n]) if n in instructions else '?',
                   'phase': phase(instructions[n]) if n in instructions else '?',
                   'op_name': instructions.get(n, {}).get('op_name', '')[-120:]}
                  for n, us in top]}
  return profile_markdown(results['profile'])


def profile_markdown(p: dict) -> str:
  r = p['rate']
  xla = (f", by XLA's cost analysis {r['xla_gflops']:.1f} GFLOP/s = "
         f"{r['xla_fraction_of_matmul']:.0%}" if r.get('xla_gflops') else '')
  lines = ['', f"JAX {r.get('model', 'midpg')} train step at batch {r['batch_size']}: "
           f"{r['step_ms']:.1f} ms "
           f"[{r['step']['p25_ms']:.1f}-{r['step']['p75_ms']:.1f}]; f32 matmul "
           f"{r['matmul_n']}^2 in the same alternation: {r['matmul_gflops']:.1f} GFLOP/s. "
           f"Achieved (analytic matmul FLOPs) {r['analytic_gflops']:.1f} GFLOP/s = "
           f"{r['analytic_fraction_of_matmul']:.0%} of the matmul rate{xla}.", '',
           f"Per-op profile ({p['traced_steps']} traced steps, {p['traced_wall_ms_per_step']:.1f} "
           f"ms wall and {p['summed_op_ms_per_step']:.1f} ms summed op time per step):", '',
           '| class | share of op time |', '|---|---|']
  lines += [f'| {k} | {v:.0%} |' for k, v in p['share_by_class'].items()]
  lines += ['', '| phase | share of op time |', '|---|---|']
  lines += [f'| {k} | {v:.0%} |' for k, v in p['share_by_phase'].items()]
  lines += ['', '| matmul kernel | GFLOP per step | GFLOP/s | share of op time |',
            '|---|---|---|---|']
  lines += [f"| {k} | {m['gflop_per_step']:.2f} | {m['gflops']:.1f} | "
            f"{m['share_of_op_time']:.0%} |" for k, m in r.get('matmul_ops', {}).items()]
  lines += ['', '| op | share | ms/step | GFLOP/s | class | phase | op_name (tail) |',
            '|---|---|---|---|---|---|---|']
  for o in p['top_ops']:
    rate_cell = f"{o['gflops']:.1f}" if o.get('gflops') else '-'
    lines.append(f"| {o['op']} | {o['share']:.1%} | {o['ms_per_step']:.1f} | {rate_cell} | "
                 f"{o['class']} | {o['phase']} | `{o['op_name'][-60:]}` |")
  return '\n'.join(lines) + '\n'

"""Models against their PyTorch references, per model: the JAX train step (the config's settings)
vs PyTorch eager and torch.compile in each scenario-loop form, all in one alternating run per batch
size; ratios against the fastest PyTorch contender of each kind of the same model.

`midpg` is the MI-DPG reference (reference/torch_midpg.py), the others reference/torch_zoo.py.
Used by `--models star,mmoe,...` and, per dtype, by the GPU suite (gpu_suite.py).
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.speed import machine, report
from benchmarks.speed.jax_side import JaxContender, make_data
from benchmarks.speed.timing import alternate, build_once, examples_per_s, stats
from benchmarks.speed.torch_side import TorchContender, ZooTorchContender, require_torch


def torch_models() -> tuple[str, ...]:
  from reference import torch_zoo as tz
  return ('midpg', *tz.MODELS)


def make_model_contenders(args, config, models: list[str], dtype: str) -> list:
  """Per model: JAX (plus --zoo_routings), PyTorch eager and torch.compile per loop form."""
  from reference import torch_zoo as tz
  require_torch('--models')
  loops = [l for l in args.zoo_loops.split(',') if l]
  if set(loops) - set(tz.SCENARIO_LOOPS) or not loops:
    raise SystemExit(f'--zoo_loops takes {tz.SCENARIO_LOOPS}, got {args.zoo_loops!r}')
  cs = []
  for name in models:
    if name not in torch_models():
      raise SystemExit(f'--models: no PyTorch reference for {name!r}; choose from '
                       f'{torch_models()}')
    key = 'scenario_matmul'
    routing = config.model[key]
    cs.append(JaxContender(f'{name}/jax', config, {'name': name}, dtype=dtype,
                           label=f'JAX {name} ({routing})'))
    for other in [r for r in args.zoo_routings.split(',') if r and r != routing]:
      cs.append(JaxContender(f'{name}/jax_{other}', config, {'name': name, key: other},
                             dtype=dtype, label=f'JAX {name} ({other})'))
    for compiled in ([False] if args.no_compile else [False, True]):
      kind = 'torch_compile' if compiled else 'torch_eager'
      title = 'torch.compile' if compiled else 'PyTorch eager'
      if name == 'midpg':  # one form: sorted rows, one matmul per scenario segment
        cs.append(TorchContender(f'{name}/{kind}_segment', config, compiled=compiled,
                                 dtype=dtype, label=f'{title} {name} (segment)'))
        continue
      for loop in loops:
        cs.append(ZooTorchContender(f'{name}/{kind}_{loop}', config, name, compiled=compiled,
                                    loop=loop, dtype=dtype, label=f'{title} {name} ({loop} loop)'))
  return cs


def _check_same_parameters(torch_contender, contenders) -> None:
  """Same model on both sides: the same parameter shapes (zoo references only)."""
  from reference import torch_zoo as tz
  twin = next(j for j in contenders if j.name == torch_contender.name.split('/')[0] + '/jax')
  if (jax.tree.map(np.shape, tz.params_as_jax_tree(torch_contender.model))
      != jax.tree.map(np.shape, jax.device_get(twin.state.params))):
    raise SystemExit(f'{torch_contender.name}: the JAX model and its PyTorch reference differ in '
                     'their parameters (is build_model the same model?)')


def device_memory(c) -> dict:
  """The contender's device memory: XLA's plan of the compiled JAX step (any backend) and the
  process's device peak; torch.cuda.max_memory_allocated over a train step. Absent on CPU."""
  out = {}
  if c.framework == 'jax':
    planned = machine.compiled_memory_mb(c.compiled_train_step())
    if planned:
      out['xla_train_step'] = planned
    peak = machine.jax_device_peak_mb()
    if peak is not None:
      out['jax_process_device_peak_mb'] = peak
  else:
    machine.torch_reset_peak()
    c.train(1)
    peak = machine.torch_device_peak_mb()
    if peak is not None:
      out['torch_device_peak_mb'] = peak
  return out


def run_models(args, config, results, models: list[str], dtype: str, key: str = 'zoo',
               batch_sizes=None, memory: bool = False):
  """Fills results[key][batch][model][contender kind] (+ 'ratios'); returns nothing."""
  contenders = make_model_contenders(args, config, models, dtype)
  table = results.setdefault(key, {})
  for bs in batch_sizes or args.batch_sizes:
    print(f'\n== {key}, {dtype}, batch {bs}', flush=True)
    ds, host = make_data(config, bs)
    for c in contenders:
      if (build_once(c, ds.spec, host[0]) and c.framework == 'torch'
          and not c.name.startswith('midpg/')):
        _check_same_parameters(c, contenders)
      c.stage(host)
      w = c.warmup()
      print(f'  warm-up {c.name}: {w:.1f}s (incl. compilation)', flush=True)
      results['compile_s'].setdefault(f'{key}/{c.name}', {})[str(bs)] = w
    train = alternate(contenders, 'train', args.steps, args.reps)
    infer = alternate(contenders, 'predict', args.steps, args.reps)
    row = table.setdefault(str(bs), {})
    for c in contenders:
      model, kind = c.name.split('/')
      entry = row.setdefault(model, {})[kind] = {
          'label': c.label, 'dtype': dtype, 'train_step': stats(train[c.name]),
          'train_examples_per_s': examples_per_s(bs, train[c.name]),
          'predict_step': stats(infer[c.name]),
          'predict_examples_per_s': examples_per_s(bs, infer[c.name])}
      if memory:
        entry['memory'] = device_memory(c)
    for model, entries in row.items():
      entries['ratios'] = _ratios(entries)
      _print_model(model, entries)
    for c in contenders:
      c.batches = None
    report.save(args, results)
  for c in contenders:  # free the compiled graphs before the next section
    c.model = c.state = None


def _ratios(entries: dict) -> dict:
  jax_ms = entries['jax']['train_step']['median_ms']
  ratios = {}
  for kind in ('torch_eager', 'torch_compile'):
    best = min(((e['train_step']['median_ms'], k) for k, e in entries.items()
                if k.startswith(kind)), default=None)
    ratios[f'jax_speedup_vs_{kind}'] = best[0] / jax_ms if best else None
    ratios[f'best_{kind}'] = best[1] if best else None
  return ratios


def _print_model(model: str, entries: dict) -> None:
  ratios = entries['ratios']
  print(f'  {model:13s} JAX {entries["jax"]["train_step"]["median_ms"]:8.1f} ms | ' + ' | '.join(
      f'{k} {e["train_step"]["median_ms"]:8.1f} ms' for k, e in entries.items()
      if k.startswith('torch')) + ' | JAX speed-up: ' + ', '.join(
      f'{v:.2f}x vs {k[len("jax_speedup_vs_"):]}' for k, v in ratios.items()
      if k.startswith('jax_speedup') and v), flush=True)

"""The report: results as JSON (`speed.json`), markdown tables (`speed.md`) and a plot
(`speed.png`) under --out. `save` runs after every section, so an interrupted run keeps what it
measured."""

from __future__ import annotations

import json
import os


def save(args, results):
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'speed.json'), 'w') as f:
    json.dump(results, f, indent=1, default=float)


def markdown_header(results) -> str:
  """One line: the device, threads, dtype, repetitions, and how loaded the machine was."""
  d = results['device']
  load = (f"; load average (1 min) {d['load_avg_1m_start']:.1f} at the start, "
          f"{d.get('load_avg_1m_end', float('nan')):.1f} at the end"
          if 'load_avg_1m_start' in d else '')
  dtype = ' and '.join(results['suite']['dtypes']) if 'suite' in results \
      else results['args']['dtype']
  return (f"Device: {d.get('cpu_model', '?')} ({d['cpu_count']} cores), JAX backend "
           f"{d['jax_backend']} ({d['jax_device_kind']})" +
           (f", torch {d.get('torch_device')}" if 'torch' in d else '') +
           f"; threads: XLA {d['threads']}, torch {d.get('torch_threads', '-')}; "
           f"dtype {dtype}; {results['args']['reps']} repetitions x "
           f"{results['args']['steps']} steps, contenders alternating{load}.\n")


def markdown_body(results) -> str:
  """The MI-DPG sections' tables."""
  lines = ['']
  tp = results['throughput']
  if tp:
    lines += ['| batch | contender | train step ms (median [p25-p75]) | train ex/s | '
              'predict ex/s | vs JAX MI-DPG (train) |', '|---|---|---|---|---|---|']
    for bs, row in tp.items():
      ref = row.get('jax', {}).get('train_examples_per_s')
      for name, e in row.items():
        s = e['train_step']
        ratio = f"{ref / e['train_examples_per_s']:.2f}x slower" if ref and name != 'jax' \
            else '-'
        if ref and name != 'jax' and e['train_examples_per_s'] > ref:
          ratio = f"{e['train_examples_per_s'] / ref:.2f}x faster"
        pred = f"{e['predict_examples_per_s']:,.0f}" if 'predict_examples_per_s' in e else '-'
        lines.append(f"| {bs} | {e['label']} | {s['median_ms']:.1f} [{s['p25_ms']:.1f}-"
                     f"{s['p75_ms']:.1f}] | {e['train_examples_per_s']:,.0f} | {pred} | "
                     f"{ratio} |")
    lines += ['', '| batch | JAX / torch eager | JAX / torch.compile | MI-DPG / backbone step | '
              'achieved train FLOP/s (JAX MI-DPG) | fraction of f32 matmul rate |',
              '|---|---|---|---|---|---|']
    fl = results['flops'].get('analytic', {})
    peak = results.get('matmul', {}).get('jax', {}).get('gflops_median')
    for bs, row in tp.items():
      j = row.get('jax', {}).get('train_examples_per_s')
      te = row.get('torch_eager', {}).get('train_examples_per_s')
      tc = row.get('torch_compile', {}).get('train_examples_per_s')
      bb = row.get('jax_backbone', {}).get('train_step', {}).get('median_ms')
      jm = row.get('jax', {}).get('train_step', {}).get('median_ms')
      achieved = j * fl['train_per_example'] / 1e9 if j and fl else None
      lines.append(f"| {bs} | {f'{j / te:.2f}x' if j and te else '-'} | "
                   f"{f'{j / tc:.2f}x' if j and tc else '-'} | "
                   f"{f'{jm / bb:.2f}x' if jm and bb else '-'} | "
                   f"{f'{achieved:.1f} GFLOP/s' if achieved else '-'} | "
                   f"{f'{achieved / peak:.0%}' if achieved and peak else '-'} |")
  if results['flops']:
    fl = results['flops'].get('analytic', {})
    lines += ['', f"FLOPs per example (analytic, matmuls): forward {fl.get('forward_per_example', 0):,}"
              f", training {fl.get('train_per_example', 0):,}; MI-DPG weight generation "
              f"{fl.get('midpg_weight_generation_per_step_fwd', 0):,} per step (forward)."]
    xla = results['flops'].get('xla_cost_analysis_train_per_example', {})
    for name, per_bs in xla.items():
      lines.append(f"XLA cost analysis, {name} train step: " + ', '.join(
          f"{v:,.0f}/example at {bs}" for bs, v in per_bs.items()))
  if results.get('matmul'):
    mm = results['matmul']
    lines.append(f"Dense f32 matmul ({mm['n']}x{mm['n']}): JAX {mm['jax']['gflops_median']:.1f} "
                 f"GFLOP/s" + (f", torch {mm['torch']['gflops_median']:.1f} GFLOP/s"
                               if 'torch' in mm else '') + ' (median).')
  if results['memory']:
    lines += ['', '| batch | contender | peak RSS MB (VmHWM, own subprocess) | '
              'over the process before the model MB |', '|---|---|---|---|']
    for bs, row in results['memory'].items():
      for name, m in row.items():
        dev = f" (device peak {m['device_peak_mb']:.0f} MB)" if 'device_peak_mb' in m else ''
        lines.append(f"| {bs} | {name} | {m['peak_rss_mb']:.0f}{dev} | "
                     f"{m['peak_rss_mb'] - m['base_rss_mb']:.0f} |")
  if results.get('pipeline'):
    p = results['pipeline']
    lines += ['', f"Pipeline (JAX MI-DPG, batch {p['batch_size']}):", '',
              '| loop | step ms | ex/s |', '|---|---|---|']
    for k, e in p.items():
      if isinstance(e, dict):
        lines.append(f"| {e['label']} | {e['step']['median_ms']:.1f} | "
                     f"{e['examples_per_s']:,.0f} |")
  if results['vocab_sweep']:
    lines += ['', '| rows of the largest table | dense Adam step ms | row-sparse (no donation) ms '
              '| row-sparse (donated state) ms |', '|---|---|---|---|']
    for v, e in results['vocab_sweep'].items():
      lines.append(f"| {int(v):,} | {e['dense']['median_ms']:.1f} | {e['sparse']['median_ms']:.1f}"
                   f" | {e['sparse_donated']['median_ms']:.1f} |")
  return '\n'.join(lines) + '\n'


def plot(args, results):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  panels = 2 if results['vocab_sweep'] else 1
  fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
  ax = axes[0][0]
  tp = results['throughput']
  names = list(next(iter(tp.values())).keys()) if tp else []
  for name in names:
    xs = [int(b) for b in tp if name in tp[b]]
    ys = [tp[str(b)][name]['train_examples_per_s'] for b in xs]
    ax.plot(xs, ys, marker='o', label=tp[str(xs[0])][name]['label'])
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('batch size')
  ax.set_ylabel('training examples / s')
  ax.set_title(f"training throughput ({results['device'].get('cpu_model', '')[:40]}, "
               f"{results['device']['threads']} threads)", fontsize=9)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  if panels == 2:
    ax = axes[0][1]
    vs = results['vocab_sweep']
    xs = [int(v) for v in vs]
    for key, label in (('dense', 'dense Adam'), ('sparse', 'row-sparse LazyAdam'),
                       ('sparse_donated', 'row-sparse, donated state')):
      ax.plot(xs, [vs[str(v)][key]['median_ms'] for v in xs], marker='o', label=label)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('rows of the largest embedding table')
    ax.set_ylabel('train step ms (median)')
    ax.set_title(f'JAX MI-DPG step vs table size (batch {args.sweep_batch})', fontsize=9)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(args.out, 'speed.png'), dpi=120)
  plt.close(fig)


def models_markdown(results, key: str = 'zoo') -> str:
  """The per-model tables of `--models` (key 'zoo') or of one dtype of the GPU suite."""
  lines = ['', '| batch | model | contender | train step ms (median [p25-p75]) | train ex/s | '
           'predict ex/s |', '|---|---|---|---|---|---|']
  for bs, row in results.get(key, {}).items():
    for model, entries in row.items():
      for kind, e in entries.items():
        if kind != 'ratios':
          s = e['train_step']
          lines.append(f"| {bs} | {model} | {e['label']} | {s['median_ms']:.1f} "
                       f"[{s['p25_ms']:.1f}-{s['p75_ms']:.1f}] | "
                       f"{e['train_examples_per_s']:,.0f} | {e['predict_examples_per_s']:,.0f} |")
  lines += ['', '| batch | model | JAX train-step speed-up vs PyTorch eager (best loop) | '
            'vs torch.compile (best loop) |', '|---|---|---|---|']
  for bs, row in results.get(key, {}).items():
    for model, entries in row.items():
      r = entries['ratios']
      cell = lambda k: (f"{r[f'jax_speedup_vs_{k}']:.2f}x ({r[f'best_{k}'].split('_')[-1]})"
                        if r.get(f'jax_speedup_vs_{k}') else '-')
      lines.append(f"| {bs} | {model} | {cell('torch_eager')} | {cell('torch_compile')} |")
  mem_rows = [(bs, model, kind, e['memory']) for bs, row in results.get(key, {}).items()
              for model, entries in row.items() for kind, e in entries.items()
              if kind != 'ratios' and e.get('memory')]
  if mem_rows:
    lines += ['', '| batch | model | contender | XLA plan of the train step MB (args + out + temp '
              '- aliased) | device peak MB |', '|---|---|---|---|---|']
    for bs, model, kind, m in mem_rows:
      plan = m.get('xla_train_step', {}).get('total_mb')
      peak = m.get('torch_device_peak_mb', m.get('jax_process_device_peak_mb'))
      lines.append(f"| {bs} | {model} | {kind} | {f'{plan:,.0f}' if plan is not None else '-'} | "
                   f"{f'{peak:,.0f}' if peak is not None else '-'} |")
  return '\n'.join(lines) + '\n'

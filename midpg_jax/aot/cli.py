"""midpg-compile: compiles a config's train and predict steps for hardware that need not be here,
and prints what XLA says of each per device.

  midpg-compile --topology v5e:4x4 [--config configs/default.py] [--batch_size 65536]
      [--config.mesh.shape='(-1,4)'] [--config.model.dtype=bfloat16] [--json out.json]

--topology: a TPU slice (v4, v5e, v5p, v6e; multi-host slices too) through compile-only libtpu
(`pip install "midpg-jax[tpu]"`), an NVIDIA target (h100:8, a100:8) through the JAX CUDA plugin's
deviceless compile (`pip install "midpg-jax[cuda]"`), or cpu:<N> host devices. Per step and device:
FLOPs and bytes accessed (XLA's cost analysis), argument / temp / output memory against the chip's
HBM, the collectives by kind with their bytes, and a roofline estimate of the step time and
examples/s/chip from the chip's published peaks (midpg_jax/aot/chips.py).
"""

from __future__ import annotations

import json
import os

from absl import flags, logging

from midpg_jax import cli
from midpg_jax.aot import chips as chips_lib
from midpg_jax.aot import targets

cli.define_config_flag('Config whose steps are compiled.')
flags.DEFINE_string('topology', None, 'Target: e.g. v5e:4x4, v4:2x2x2, v5e:8x8, h100:8, cpu:8.')
flags.DEFINE_integer('batch_size', None, 'Global train batch (default: --per_chip_batch x chips, '
                     'else config.train.batch_size); must divide by the mesh data axis.')
flags.DEFINE_integer('per_chip_batch', None, 'Train rows per chip of the data axis (weak scaling).')
flags.DEFINE_integer('predict_batch_size', None, 'Global predict batch (default: the train one).')
flags.DEFINE_list('steps', ['train', 'predict'], 'Which steps to compile.')
flags.DEFINE_string('json', None, 'Also write the numbers to this JSON file.')
flags.mark_flag_as_required('topology')
FLAGS = flags.FLAGS


def report(target: targets.Target, config, batch_size: int | None = None,
           per_chip_batch: int | None = None, predict_batch_size: int | None = None,
           steps=('train', 'predict')) -> dict:
  """Compiles the steps of `config` for `target`; the numbers per step and device."""
  from midpg_jax.aot import analysis
  from midpg_jax.aot.steps import compile_steps
  from midpg_jax.partitioning import resolve_mesh_shape
  devices = target.devices()
  data, model = resolve_mesh_shape(tuple(config.mesh.shape), len(devices))
  if batch_size is None:
    batch_size = per_chip_batch * data if per_chip_batch else int(config.train.batch_size)
  partitioner, compiled = compile_steps(config, devices, batch_size, predict_batch_size,
                                        steps=tuple(steps))
  out = {'target': target.name, 'devices': len(devices),
         'hosts': len({d.process_index for d in devices}),
         'device_kind': getattr(devices[0], 'device_kind', devices[0].platform),
         'mesh': dict(partitioner.mesh.shape), 'model': config.model.name,
         'dtype': config.model.get('dtype', 'float32'), 'steps': {}}
  for c in compiled:
    info = analysis.analyse(c.executable, c.shard_rows)
    info.update(batch_size=c.batch_size, rows_per_device=c.shard_rows)
    cost = info['cost']
    if target.chip is not None and 'flops' in cost and 'bytes_accessed' in cost:
      seconds = chips_lib.roofline_seconds(target.chip, cost['flops'], cost['bytes_accessed'])
      info['roofline'] = {'seconds': seconds, 'examples_per_s_per_chip': c.shard_rows / seconds}
    out['steps'][c.step] = info
  return out


def _size(n: float) -> str:
  for unit, scale in (('GiB', 2 ** 30), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
    if n >= scale:
      return f'{n / scale:.2f} {unit}'
  return f'{int(n)} B'


def format_report(r: dict, chip) -> str:
  lines = [f'{r["model"]} ({r["dtype"]}) on {r["target"]}: {r["devices"]} x {r["device_kind"]}, '
           f'{r["hosts"]} host(s), mesh {r["mesh"]}']
  for step, info in r['steps'].items():
    cost, mem = info['cost'], info['memory']
    lines.append(f'  {step} step, global batch {info["batch_size"]:,} '
                 f'({info["rows_per_device"]:,} rows per device), per device:')
    if 'flops' in cost:
      lines.append(f'    FLOPs            {cost["flops"] / 1e9:,.3f} G')
      lines.append(f'    bytes accessed   {_size(cost.get("bytes_accessed", 0))}')
    else:
      lines.append('    FLOPs            (no cost analysis from this backend)')
    if mem:
      hbm = f' of {_size(chip.hbm_bytes)} HBM' if chip else ''
      total = mem['argument'] + mem['output'] + mem['temp'] - mem['alias']
      lines.append(f'    memory           argument {_size(mem["argument"])}, temp '
                   f'{_size(mem["temp"])}, output {_size(mem["output"])} (alias '
                   f'{_size(mem["alias"])}): {_size(total)}{hbm}'
                   + (f' ({100 * total / chip.hbm_bytes:.1f} %)' if chip else ''))
    coll = ', '.join(f'{k} {v["count"]} ({_size(v["bytes"])})'
                     for k, v in info['collectives'].items()) or 'none'
    lines.append(f'    collectives      {coll}')
    if info['batch_all_gathers']:
      lines.append(f'    WARNING          {len(info["batch_all_gathers"])} all-gather(s) of '
                   'batch rows: the step is not data parallel')
    if 'roofline' in info:
      roof = info['roofline']
      lines.append(f'    roofline         {roof["seconds"] * 1e3:.3f} ms/step, '
                   f'{roof["examples_per_s_per_chip"]:,.0f} examples/s/chip (peak '
                   f'{chip.bf16_flops / 1e12:.0f} TFLOP/s bf16, {chip.hbm_bandwidth / 1e9:,.0f} '
                   'GB/s: a lower bound)')
  return '\n'.join(lines)


def _prepare_backend(target: targets.Target) -> None:
  """Before JAX's backend starts: host devices for cpu:<N>; otherwise JAX runs on the CPU here
  (the target's devices come from its compile-only topology, not from an attached backend)."""
  import jax
  if not os.environ.get('JAX_PLATFORMS'):  # read by jax on import: set its config instead
    jax.config.update('jax_platforms', 'cpu')
  if target.platform == 'cpu':
    from midpg_jax import xla_defaults
    os.environ['XLA_FLAGS'] = xla_defaults.with_xla_flags(
        f'--xla_force_host_platform_device_count={target.count}')


def main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # JAX logs each backend it does not find at INFO
  target = targets.parse(FLAGS.topology)
  _prepare_backend(target)
  config = cli.config_from_flags()
  r = report(target, config, FLAGS.batch_size, FLAGS.per_chip_batch, FLAGS.predict_batch_size,
             FLAGS.steps)
  print(format_report(r, target.chip))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(r, f, indent=1)
    print(f'\nnumbers: {FLAGS.json}')


def run() -> None:
  """The console entry point (`midpg-compile`)."""
  cli.run(main)

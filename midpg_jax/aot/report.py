"""What `midpg-compile` reports of a config's steps compiled for a target: the numbers per step and
device (`report`) and their table (`format_report`)."""

from __future__ import annotations

from midpg_jax.aot import analysis, targets
from midpg_jax.aot import chips as chips_lib
from midpg_jax.aot.steps import compile_steps
from midpg_jax.partitioning import resolve_mesh_shape


def report(target: targets.Target, config, batch_size: int | None = None,
           per_chip_batch: int | None = None, predict_batch_size: int | None = None,
           steps=('train', 'predict')) -> dict:
  """Compiles the steps of `config` for `target`; the numbers per step and device."""
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

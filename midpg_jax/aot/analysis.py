"""What XLA says of one compiled step, per device: cost, memory and the collectives in the
optimised (SPMD-partitioned) HLO."""

from __future__ import annotations

import dataclasses
import re

COLLECTIVES = ('all-gather', 'all-reduce', 'reduce-scatter', 'all-to-all', 'collective-permute')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
          'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}
# An instruction of HLO text: `%name = <result type> <opcode>(<operands>), <attributes>`; the
# operands are names, their types are where they are defined.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?(?P<name>%[\w.\-]+)\s*=\s*(?P<rest>.*)$')
_OPCODE = re.compile(r'\s(?P<op>[a-z][\w\-]*)\((?P<operands>[^)]*)\)')
_ARRAY = re.compile(r'\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]')


def _arrays(text: str) -> list[tuple[str, tuple[int, ...]]]:
  return [(m['dtype'], tuple(int(d) for d in m['dims'].split(',') if d))
          for m in _ARRAY.finditer(text) if m['dtype'] in _BYTES or m['dtype'].startswith('f8')]


def _nbytes(arrays) -> int:
  total = 0
  for dtype, dims in arrays:
    size = 1
    for d in dims:
      size *= d
    total += size * _BYTES.get(dtype, 1)
  return total


@dataclasses.dataclass
class Collective:
  kind: str
  result: list  # [(dtype, dims)] of the result (several for a combined collective)
  operands: list  # [(dtype, dims)] of the operands

  @property
  def bytes(self) -> int:
    """Bytes of the result on one device (for an all-gather: the gathered array)."""
    return _nbytes(self.result)


def collectives(hlo_text: str) -> list[Collective]:
  """Every collective of an optimised HLO module's text (one device's program). An async pair
  (`all-gather-start` / `-done`) counts once, with the start's operands and the done's result."""
  types, found, starts = {}, [], {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if m is None:
      continue
    op = _OPCODE.search(m['rest'])
    if op is None:
      continue
    types[m['name']] = m['rest'][:op.start()]
    opcode = op['op']
    operand_names = re.findall(r'%[\w.\-]+', op['operands'])
    kind = opcode.removesuffix('-start').removesuffix('-done')
    if kind not in COLLECTIVES:
      continue
    operands = [a for name in operand_names for a in _arrays(types.get(name, ''))]
    if opcode.endswith('-start'):
      starts[m['name']] = operands
      continue
    if opcode.endswith('-done'):
      operands = starts.pop(operand_names[0], []) if operand_names else []
    found.append(Collective(kind, _arrays(types[m['name']]), operands))
  return found


def collective_summary(found: list[Collective]) -> dict[str, dict]:
  """{kind: {'count', 'bytes'}} of the collectives that occur."""
  summary: dict[str, dict] = {}
  for c in found:
    entry = summary.setdefault(c.kind, {'count': 0, 'bytes': 0})
    entry['count'] += 1
    entry['bytes'] += c.bytes
  return summary


def batch_gathers(found: list[Collective], shard_rows: int) -> list[Collective]:
  """All-gathers of an array with a dimension of at least `shard_rows` (a device's rows of the
  batch): gathering the batch's rows (or a row-sharded table) onto every device. Replicated
  parameters are never gathered, and per-row results only are when a step stops being data
  parallel."""
  return [c for c in found if c.kind == 'all-gather'
          and any(d >= shard_rows for _, dims in c.operands for d in dims)]


def cost(compiled) -> dict:
  """XLA's cost analysis of one device's program: flops, bytes accessed, transcendentals, and
  `source`. The CUDA plugin's compile-only executables report none; for them XLA's HLO cost
  analysis runs on the optimised per-device module itself (through jaxlib's internal
  `hlo_module_cost_analysis`: the same HloCostAnalysis, with the CPU client's shape sizes).
  libtpu's `optimal_seconds` is left out: it came out negative for these programs."""
  raw, source = None, 'compiled.cost_analysis()'
  try:
    raw = compiled.cost_analysis()
  except Exception:  # not implemented for every backend
    pass
  raw = raw[0] if isinstance(raw, (list, tuple)) and raw else raw
  if not raw:
    try:
      from jax._src import xla_bridge
      from jax._src.lib import xla_client
      module = compiled.runtime_executable().hlo_modules()[0]
      raw = xla_client._xla.hlo_module_cost_analysis(xla_bridge.get_backend('cpu'), module)
      source = 'HloCostAnalysis of the optimised module'
    except Exception:  # an internal API: report no cost rather than fail the compile
      return {}
  keys = {'flops': 'flops', 'bytes accessed': 'bytes_accessed',
          'transcendentals': 'transcendentals'}
  out = {ours: float(raw[theirs]) for theirs, ours in keys.items() if theirs in raw}
  return {**out, 'source': source} if out else {}


def memory(compiled) -> dict:
  """Bytes per device of the step's arguments, outputs, temporaries and aliased buffers."""
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  return {'argument': int(stats.argument_size_in_bytes),
          'output': int(stats.output_size_in_bytes),
          'temp': int(stats.temp_size_in_bytes),
          'alias': int(stats.alias_size_in_bytes)}


def analyse(compiled, shard_rows: int) -> dict:
  """cost, memory, collectives (by kind) and the batch all-gathers of a compiled step."""
  found = collectives(compiled.as_text())
  return {'cost': cost(compiled), 'memory': memory(compiled),
          'collectives': collective_summary(found),
          'batch_all_gathers': [f'{c.result}' for c in batch_gathers(found, shard_rows)]}

"""Target names -> devices to compile for, none of which need be attached.

  v5e:4x4, v4:2x2x2, v5p:4x4x4, v6e:8x8, v5e:16x16 (any slice of a TPU generation libtpu knows,
                 multi-host slices included)    compile-only libtpu (`pip install midpg-jax[tpu]`)
  h100:8, a100:8, h100:4x8 (hosts x GPUs)       the JAX CUDA plugin's deviceless compile
                                                (`pip install midpg-jax[cuda]`)
  cpu:8                                         host CPU devices of this process (XLA_FLAGS
                                                --xla_force_host_platform_device_count, which
                                                midpg-compile sets before JAX starts)
"""

from __future__ import annotations

import dataclasses
import os
import re

from midpg_jax.aot.chips import CHIPS, Chip
from midpg_jax.errors import ConfigError, UserError

TPU_GENERATIONS = ('v4', 'v5e', 'v5p', 'v6e')
GPUS = ('h100', 'a100')


class MissingCompilerError(UserError):
  """The compile-only backend of a target is not installed."""


@dataclasses.dataclass
class Target:
  name: str
  platform: str  # 'tpu' | 'cuda' | 'cpu'
  chip: Chip | None  # None: host CPU (no published peak)
  count: int  # devices
  hosts: int  # GPU targets: as named; TPU slices: as libtpu lays them out (`devices()`)
  shape: tuple[int, ...] = ()

  def devices(self):
    if self.platform == 'cpu':
      import jax
      devices = jax.devices('cpu')
      if len(devices) < self.count:
        raise ConfigError(f'target {self.name}: this process has {len(devices)} CPU devices; '
                          f'start it with XLA_FLAGS=--xla_force_host_platform_device_count='
                          f'{self.count} (midpg-compile does)')
      return devices[:self.count]
    from jax.experimental import topologies
    if self.platform == 'tpu':
      _require('libtpu', 'tpu')
      os.environ.setdefault('TPU_ACCELERATOR_TYPE', 'v5litepod-1')  # no metadata server here
      os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
      # A slice smaller than libtpu's default host (2x2x1 chips) is one host of its own size.
      small = {} if self.count >= 4 else {
          'chips_per_host_bounds': (*self.shape, *(1,) * (3 - len(self.shape)))}
      describe = lambda: topologies.get_topology_desc(platform='tpu', topology_name=self.name,
                                                      **small)
    else:
      _require('jax_plugins.xla_cuda13', 'cuda')
      describe = lambda: topologies.get_topology_desc(
          platform='cuda', topology_name=self.name,
          topology=f'1x{self.hosts}x{self.count // self.hosts}',
          target_config=_GPU_TARGET_CONFIGS[self.chip.name])
    try:
      devices = describe().devices
    except Exception as e:  # the plugin's own error types (JaxRuntimeError, RuntimeError)
      first = next((l.strip() for l in str(e).splitlines() if l.strip()), type(e).__name__)
      raise ConfigError(f'--topology {self.name}: the {self.platform} compiler has no such '
                        f'target ({first[:300]})') from e
    # v4's compile-only topology lists both TensorCores of a chip; JAX runs a v4 chip as one
    # device (megacore), and its TPU meshes take one device per chip: the first core's.
    return [d for d in devices if getattr(d, 'core_on_chip', 0) == 0]


def _require(module: str, extra: str) -> None:
  import importlib.util
  try:
    found = importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    found = False
  if not found:
    raise MissingCompilerError(f'compiling for this target needs {module}, which is not '
                               f'installed: pip install "midpg-jax[{extra}]"')


def parse(name: str) -> Target:
  """'v5e:4x4' -> Target (an unknown name is a ConfigError listing the forms)."""
  m = re.fullmatch(r'(?P<kind>[a-z0-9]+):(?P<shape>\d+(?:x\d+)*)', name.strip().lower())
  if m is None or m['kind'] not in (*TPU_GENERATIONS, *GPUS, 'cpu'):
    raise ConfigError(f'unknown --topology {name!r}: use a TPU slice <generation>:<shape> '
                      f'({", ".join(TPU_GENERATIONS)}; e.g. v5e:4x4, v4:2x2x2), a GPU target '
                      f'<gpu>:<count> or <gpu>:<hosts>x<count> ({", ".join(GPUS)}; e.g. h100:8) '
                      'or cpu:<count>')
  kind, dims = m['kind'], [int(d) for d in m['shape'].split('x')]
  count = 1
  for d in dims:
    count *= d
  if count <= 0:
    raise ConfigError(f'--topology {name!r} has no devices')
  if kind == 'cpu':
    return Target(name, 'cpu', None, count, 1, tuple(dims))
  if kind in GPUS:
    if len(dims) > 2:
      raise ConfigError(f'--topology {name!r}: a GPU target is <gpu>:<count> or '
                        '<gpu>:<hosts>x<count>')
    return Target(name, 'cuda', CHIPS[kind], count, dims[0] if len(dims) == 2 else 1,
                  tuple(dims))
  ndim = 3 if kind in ('v4', 'v5p') else 2
  if len(dims) != ndim:
    raise ConfigError(f'--topology {name!r}: {kind} slices have {ndim} dimensions, e.g. '
                      + ('v4:2x2x2' if ndim == 3 else f'{kind}:4x4'))
  return Target(name, 'tpu', CHIPS[kind], count, 0, tuple(dims))


# XLA GPU target descriptions (stream_executor.GpuTargetConfigProto, text format) from the
# published facts of each card: what the deviceless compile optimises for.
_GPU_TARGET_CONFIGS = {
    'h100': '''gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: 3352320000000 l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: 84978434048 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536
  registers_per_block_limit: 65536 }
platform_name: "CUDA" dnn_version_info { major: 9 minor: 8 }
device_description_str: "NVIDIA H100 80GB HBM3"''',
    'a100': '''gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 167936 threads_per_core_limit: 2048 core_count: 108
  fpus_per_core: 64 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: 2039000000000 l2_cache_size: 41943040
  clock_rate_ghz: 1.41 device_memory_size: 85198045184 shared_memory_per_block_optin: 166912
  cuda_compute_capability { major: 8 } registers_per_core_limit: 65536
  registers_per_block_limit: 65536 }
platform_name: "CUDA" dnn_version_info { major: 9 minor: 8 }
device_description_str: "NVIDIA A100-SXM4-80GB"''',
}

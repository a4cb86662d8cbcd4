"""The machine: device description, host and device memory probes, the optional torch handle.

Imported only after `cli.set_threads` has set the thread environment (JAX and torch read it when
they start). Every probe degrades to None where the device has no such counter (e.g. device
memory on a CPU), so the same code runs on a laptop and on a GPU.
"""

from __future__ import annotations

import os
import platform
import resource
import sys

import jax

try:
  import torch
except ImportError:  # JAX-only runs still work
  torch = None


def torch_device() -> str:
  return 'cuda' if torch is not None and torch.cuda.is_available() else 'cpu'


def torch_sync() -> None:
  if torch is not None and torch.cuda.is_available():
    torch.cuda.synchronize()


def on_accelerator() -> bool:
  return jax.default_backend() != 'cpu'


def device_info(threads: int) -> dict:
  info = {'platform': platform.platform(), 'python': platform.python_version(),
          'cpu_count': os.cpu_count(), 'threads': threads,
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'jax': jax.__version__,
          'jax_devices': [str(d) for d in jax.devices()],
          'jax_device_kind': jax.devices()[0].device_kind, 'jax_backend': jax.default_backend()}
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    info['cpu_model'] = names[0] if names else platform.processor()
  except OSError:
    info['cpu_model'] = platform.processor()
  try:  # the 1-minute load average: the bench shares its machine, say how busy it was
    info['load_avg_1m_start'] = os.getloadavg()[0]
  except OSError:
    pass
  if torch is not None:
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
    info['torch_device'] = torch_device()
    if torch.cuda.is_available():
      info['torch_device_name'] = torch.cuda.get_device_name(0)
  return info


# ---------------------------------------------------------------------------------------------
# Host memory

def _status_mb(field: str) -> float | None:
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def rss_mb() -> float:
  return _status_mb('VmRSS') or float('nan')


def peak_rss_mb() -> tuple[float, str]:
  """The RSS high-water mark of this process: /proc VmHWM (Linux), else ru_maxrss.

  Not ru_maxrss on Linux: a subprocess inherits its parent's ru_maxrss across fork + exec.
  """
  hwm = _status_mb('VmHWM')
  if hwm is not None:
    return hwm, 'RSS high-water mark (/proc/self/status VmHWM)'
  scale = 1 / 2 ** 20 if sys.platform == 'darwin' else 1 / 1024  # bytes on macOS, KiB on Linux
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, 'getrusage ru_maxrss'


# ---------------------------------------------------------------------------------------------
# Device memory

def jax_device_peak_mb() -> float | None:
  """The JAX device's peak bytes in use so far in this process (None on CPU: no counter)."""
  stats = jax.devices()[0].memory_stats() if on_accelerator() else None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / 2 ** 20


def compiled_memory_mb(compiled) -> dict | None:
  """XLA's plan for one compiled function: arguments, outputs, temporaries, on any backend.

  The step's own footprint, whatever else the process holds (JAX cannot reset its peak counter).
  """
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend / version implements it
    return None
  if m is None:
    return None
  mb = lambda n: float(n) / 2 ** 20
  out = {'arguments_mb': mb(m.argument_size_in_bytes), 'outputs_mb': mb(m.output_size_in_bytes),
         'temporaries_mb': mb(m.temp_size_in_bytes), 'aliased_mb': mb(m.alias_size_in_bytes)}
  out['total_mb'] = (out['arguments_mb'] + out['outputs_mb'] + out['temporaries_mb']
                     - out['aliased_mb'])
  return out


def torch_reset_peak() -> None:
  if torch is not None and torch.cuda.is_available():
    torch.cuda.reset_peak_memory_stats()


def torch_device_peak_mb() -> float | None:
  """torch.cuda.max_memory_allocated since the last reset (None without CUDA)."""
  if torch is None or not torch.cuda.is_available():
    return None
  return torch.cuda.max_memory_allocated() / 2 ** 20

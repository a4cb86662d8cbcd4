"""XLA flags this project sets for its own processes, before JAX's backend starts.

Every entry point (the midpg-* commands and train.py / eval.py through `cli.run`, the speed
benchmark, the test suite's conftest) calls `apply()` first: it adds each flag of `DEFAULT_FLAGS`
to the environment variable XLA_FLAGS unless XLA_FLAGS already names it (the user's value wins)
or MIDPG_JAX_XLA_DEFAULTS=0. Importing midpg_jax sets nothing: a program that uses the library
(the Python API, a notebook) keeps its own XLA_FLAGS and may call `apply()` itself before its first
JAX computation. XLA reads XLA_FLAGS once, when its backend starts: a process whose JAX backend is
already running keeps its flags.

* `--xla_cpu_experimental_ynn_fusion_type=` (empty: no dot fusions through YNNPACK): XLA:CPU's own
  dot kernels instead. Measured with `python -m benchmarks.speed --zoo-table` on this project's
  2-core CPU, batch 4096, one run per setting (docs/speed.md): every model's train step got
  faster, e.g. the plain MLP 35.1 -> 27.9 ms, per-scenario-tower Shared-Bottom 49.9 -> 38.4,
  MI-DPG 70.2 -> 44.4, STAR 96.9 -> 68.7, MMoE 231 -> 193, PLE 336 -> 273; midpg-predict's scoring
  got faster too. The flag is CPU-only (GPU/TPU backends ignore it) and exists in the pinned
  jaxlib (requirements.txt); an XLA that does not know a flag in XLA_FLAGS aborts at start, so a
  jaxlib upgrade must re-check it.
"""

from __future__ import annotations

import os

DEFAULT_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=',)
OPT_OUT = 'MIDPG_JAX_XLA_DEFAULTS'  # '0': leave XLA_FLAGS alone


def _flag_name(flag: str) -> str:
  return flag.split('=')[0].lstrip('-')


def with_xla_flags(flags, current: str | None = None) -> str:
  """`current` (default: XLA_FLAGS) plus each of `flags` (a string or a sequence) whose name it
  does not set already."""
  current = os.environ.get('XLA_FLAGS', '') if current is None else current
  flags = flags.split() if isinstance(flags, str) else flags
  named = {_flag_name(f) for f in current.split()}
  for flag in flags:
    if _flag_name(flag) not in named:
      current = f'{current} {flag}'
  return current.strip()


def apply(flags=DEFAULT_FLAGS) -> None:
  """Adds `flags` to XLA_FLAGS for this process and its children (see the module docstring)."""
  if os.environ.get(OPT_OUT, '1').strip() == '0':
    return
  value = with_xla_flags(flags)
  if value:
    os.environ['XLA_FLAGS'] = value

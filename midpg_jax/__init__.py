"""midpg-jax: MI-DPG and a zoo of multi-scenario CVR models in JAX/Flax.

  import midpg_jax
  run = midpg_jax.load_run('runs/aliccp')        # a trained run: config, spec, metrics
  probs = run.predict('ali_ccp_test.csv')        # raw rows -> conversion probabilities

  model = midpg_jax.load_exported('export/aliccp')  # a serving export (midpg_jax/export.py)

The names are imported on first use, so `import midpg_jax.export` on a serving machine does not
import the training code (flax, optax, orbax) and `import midpg_jax` stays cheap.
"""

from importlib import metadata as _metadata

try:
  __version__ = _metadata.version('midpg-jax')
except _metadata.PackageNotFoundError:  # running from a source checkout that is not installed
  __version__ = '0+unknown'

_LAZY = {'load_run': 'midpg_jax.api', 'Run': 'midpg_jax.api',
         'load_exported': 'midpg_jax.export', 'export_run': 'midpg_jax.export'}


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
  return sorted([*globals(), *_LAZY])


__all__ = ['__version__', *_LAZY]

"""Shared test fixtures: a small, fast version of the default config."""

import os
import tempfile

import numpy as np
import pytest

# `midpg_jax` is the installed package (`make` runs `pip install -e .`); configs/ holds the
# repository's config files, loaded by their path (`config_file`) as --config loads them.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def pytest_configure(config):
  """The package's XLA flags, set as every entry point sets them (midpg_jax/xla_defaults.py), and
  one persistent XLA compilation cache for the whole test run, in this process and in the
  subprocesses the tests start (train.py, eval.py, the distributed workers): the suite compiles
  the same train and predict steps again and again (each run jits afresh, so JAX's in-memory
  caches miss), and a cache hit replaces a compilation of seconds by a file read. Kept in
  .pytest_cache between runs; a clean checkout (CI) starts cold. Must be set before the first
  compilation, hence here and not in a fixture."""
  from midpg_jax import xla_defaults
  xla_defaults.apply()  # before JAX's backend starts; the subprocesses inherit them
  cache = getattr(config, 'cache', None)  # None under `-p no:cacheprovider`
  directory = (str(cache.mkdir('jax_compilation_cache')) if cache is not None
               else tempfile.mkdtemp(prefix='jax_compilation_cache_'))
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', directory)
  # Every compilation is written, not only those over JAX's default second: a step of the small
  # test models compiles in well under a second on an idle machine and is still worth keeping.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  import jax
  jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))


def import_torch():
  """torch, for the tests against the PyTorch references (requirements-bench.txt, which `make`
  installs); without it the calling test module is skipped, with this reason."""
  return pytest.importorskip('torch', reason='torch is not installed: `pip install -r '
                             'requirements-bench.txt` (`make` does) to compare with PyTorch')


def config_file(name: str):
  """The module of the config file configs/<name>.py, loaded by its path as `--config` loads it
  (the files are not a package: the wheel installs midpg_jax alone)."""
  import importlib.util
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location('configs_' + name.replace('/', '_'), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_SAMPLES = []


def swr_samples():
  """The folder of the Scenario-Wise-Rec-form samples (tests/samples.py: Ali-CCP, MIND, Douban),
  written once per test process."""
  import pathlib
  import samples
  if not _SAMPLES:
    _SAMPLES.append(pathlib.Path(samples.write_samples(tempfile.mkdtemp(prefix='swr_samples_'))))
  return _SAMPLES[0]


def small_config(**data_overrides):
  """The default config scaled down to run in seconds on 2 CPU cores."""
  from midpg_jax.config import get_config
  c = get_config()
  c.data.num_train = 40_000
  c.data.num_val = 10_000
  c.data.num_test = 10_000
  c.data.vocab_sizes = (2_000, 500, 200, 100, 50, 20, 10, 5)
  for k, v in data_overrides.items():
    c.data[k] = v
  c.model.hidden = (64, 32)
  c.model.embed_dim = 8
  c.train.batch_size = 512
  c.train.eval_batch_size = 4096
  c.train.num_epochs = 2
  c.train.progress_bar = False
  c.train.log_every_steps = 20
  c.train.early_stop_patience = 0
  # The optimizer the unit tests were written against (their references use a constant rate
  # and no penalty), not the defaults' one-pass linear decay with the batch-row L2.
  c.train.learning_rate = 1e-3
  c.train.schedule = 'constant'
  c.train.embedding_l2 = 0.0
  c.train.eval_every_steps = 0
  return c


def tiny_config(**data):
  """16 steps of 256 rows, an evaluation every 5 steps: for the tests of a run's bookkeeping
  (resume, checkpoints, metrics files, eval), not of learning. The tests that train with it share
  its compiled train and predict steps through the suite's compilation cache (same model, batch
  and evaluation shapes), so keep a test's changes to what does not change the programs."""
  c = small_config(num_train=4_096, num_val=1_000, num_test=1_000, **data)
  c.model.hidden = (16,)
  c.train.batch_size = 256
  c.train.eval_batch_size = 1_000
  c.train.num_epochs = 1
  c.train.eval_every_steps = 5
  c.train.log_every_steps = 5
  return c


# XLA compile options for the tests: without the backend optimisations, compiling (which is most
# of a test's time on CPU) takes less than half as long, and the results are the same up to float32
# rounding, which the tests' tolerances allow.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def compiled(fn, *args):
  """fn jitted and compiled for the shapes of args with FAST_COMPILE."""
  import jax
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)


def run_compiled(fn, *args):
  """fn(*args), jitted as one program. Not run op by op: eagerly, every primitive compiles on its
  own for each new shape (a flax init draws each parameter's random numbers in its own program),
  measured 36 CPU-s for MI-DPG's eager init against 7.6 jitted."""
  return compiled(fn, *args)(*args)


def fast_subset(names, fast):
  """`names` as pytest parameters, all but those in `fast` marked slow: `make test-fast` checks
  a test on a few models, `make test` on every one."""
  return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


def jaxpr_shapes(jaxpr) -> set[tuple[int, ...]]:
  """The shape of every value a jaxpr computes, its sub-jaxprs' (scan, cond, custom VJPs) too: the
  tests that no model builds a (batch, d_in, d_out) weight read them."""
  import jax
  shapes = set()
  for eqn in jaxpr.eqns:
    shapes.update(tuple(getattr(var.aval, 'shape', ())) for var in eqn.outvars)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes |= jaxpr_shapes(sub)
  return shapes


def perturbed(tree, scale: float = 0.1, seed: int = 3):
  """A copy of a parameter tree with every leaf moved off its initial value by scale * N(0, 1)
  noise, so no zero-initialised factor or still-shared per-scenario weight hides a path.

  The noise is drawn with NumPy and put on the device as it is: drawing it with jax.random leaf by
  leaf compiles one random-number program per distinct leaf shape (dozens per model, seconds of
  compilation per test) for numbers whose only job is to be non-zero and different."""
  import jax
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jax.device_put(
      (np.asarray(x) + scale * rng.standard_normal(np.shape(x))).astype(np.asarray(x).dtype)), tree)


@pytest.fixture
def config():
  return small_config()


def parity_data():
  """(config, dataset, batch) for the PyTorch parity tests: a 256-row batch with 16 padding rows
  (weight 0), which both sides must mask out identically."""
  from midpg_jax.data import load_dataset, pipeline
  from midpg_jax.train_state import model_inputs
  c = small_config()
  c.data.num_train, c.data.num_val, c.data.num_test = 4_000, 1_000, 1_000
  ds = load_dataset(c.data)
  batch = model_inputs(next(pipeline.eval_batches(ds.splits['train'], 256)))
  batch['weight'][-16:] = 0.0
  return c, ds, batch

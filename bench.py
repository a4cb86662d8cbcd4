"""Training and inference throughput: midpg_jax (JAX) vs PyTorch eager vs torch.compile.

  python bench.py                  # full run: batch 1k-64k, every section (tens of minutes on 2 cores)
  python bench.py --quick          # batch 1k and 4k, fewer repetitions (a few minutes)
  python bench.py --vocab-sweep    # also step time vs embedding-table size, dense vs row-sparse
  python bench.py --dtype bf16     # bfloat16 compute (float32 master weights), e.g. on a GPU
  python bench.py --models star,mmoe,ple --batch-sizes 4096   # the zoo vs its PyTorch references

Everything runs in one process and the contenders *alternate* (each repetition times every
contender once, in a rotating order), so a noisy, shared machine slows them alike and the ratios
hold. Thread counts are set equal for both frameworks before they start and printed:
`--threads` (default: all cores) -> XLA `--xla_cpu_multi_thread_eigen=true
intra_op_parallelism_threads=N`, `torch.set_num_threads(N)`, `OMP_NUM_THREADS=N`.

Sections (written to `--out`, default runs/bench/: bench.json, bench.md, bench.png):
* throughput: per batch size and contender, training step latency (median, p25-p75, min over
  repetitions of `--steps` steps, after warm-up and compilation) and examples/s, inference
  examples/s; contenders: JAX MI-DPG with the config's settings, the JAX plain backbone
  (`mlp`, same widths), PyTorch eager and torch.compile (reference/torch_midpg.py), and
  the other JAX scenario-matmul paths and embedding-optimizer setting (training only).
* FLOPs per example, analytically from the layer shapes and from XLA's cost analysis of the
  compiled step, and the achieved FLOP/s as a fraction of this machine's float32 matmul rate
  (a large matmul timed in the same run).
* peak memory: the RSS high-water mark (/proc/self/status VmHWM) of a fresh subprocess that
  builds and runs only that contender, and its growth over the same process before the model was
  built (imports and data already loaded); plus the device's peak bytes on a GPU. Not
  tracemalloc (it cannot see XLA's or torch's native allocations), and not ru_maxrss (a
  subprocess inherits its parent's across fork + exec).
* pipeline: the trainer's loop shape at one batch size: batches already on device vs host
  batches put on the device inline vs through the trainer's prefetch thread, and with a host sync
  (fetching the loss) every step.
* vocab sweep (`--vocab-sweep`): JAX MI-DPG step time vs the size of the largest table (10k-10M
  rows), dense Adam vs the row-sparse LazyAdam path (with and without buffer donation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--quick', action='store_true', help='batch 1k and 4k, fewer repetitions')
  p.add_argument('--batch-sizes', default=None, help='comma-separated; default 1024,4096,16384,'
                 '65536 (quick: 1024,4096)')
  p.add_argument('--reps', type=int, default=None, help='timed repetitions (default 7; quick 5)')
  p.add_argument('--steps', type=int, default=None, help='steps per repetition (default 3)')
  p.add_argument('--threads', type=int, default=0, help='threads per framework (0 = all cores)')
  p.add_argument('--dtype', choices=('f32', 'bf16'), default='f32')
  p.add_argument('--config', default=os.path.join(ROOT, 'configs', 'default.py'))
  p.add_argument('--out', default=os.path.join(ROOT, 'runs', 'bench'))
  p.add_argument('--no-torch', action='store_true', help='JAX contenders only')
  p.add_argument('--no-compile', action='store_true', help='skip torch.compile')
  p.add_argument('--no-paths', action='store_true', help='skip the other scenario-matmul paths')
  p.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
  p.add_argument('--no-pipeline', action='store_true', help='skip the pipeline section')
  p.add_argument('--vocab-sweep', action='store_true', help='also step time vs table size')
  p.add_argument('--vocab-sizes', default=None,
                 help='comma-separated rows of the largest table for --vocab-sweep (default '
                 '10000,100000,1000000,10000000; quick: up to 1000000)')
  p.add_argument('--sweep-batch', type=int, default=4096)
  p.add_argument('--matmul-size', type=int, default=2048, help='n of the n x n peak matmul')
  p.add_argument('--models', default=None,
                 help='comma-separated zoo models (star,mmoe,ple): instead of MI-DPG, each '
                 'model\'s JAX train step vs its PyTorch reference, eager and torch.compile')
  p.add_argument('--zoo-routings', default='',
                 help='for --models, also time the JAX models with these other '
                 'model.zoo_scenario_matmul values (comma-separated; ratios stay for the config\'s)')
  p.add_argument('--zoo-loops', default='subset',
                 help='the PyTorch references\' scenario loops for --models: subset, masked or '
                 'both (comma-separated)')
  p.add_argument('--probe-memory', default=None, help=argparse.SUPPRESS)  # internal
  p.add_argument('--probe-batch', type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  quick = args.quick
  args.batch_sizes = [int(b) for b in (args.batch_sizes or (
      '1024,4096' if quick else '1024,4096,16384,65536')).split(',')]
  args.reps = args.reps or (5 if quick else 7)
  args.steps = args.steps or 3
  args.vocab_sizes = [int(v) for v in (args.vocab_sizes or (
      '10000,100000,1000000' if quick else '10000,100000,1000000,10000000')).split(',')]
  return args


def set_threads(threads: int) -> int:
  """Equal intra-op threads for XLA and torch; must run before either is imported."""
  n = threads or os.cpu_count() or 1
  flags = os.environ.get('XLA_FLAGS', '')
  if 'intra_op_parallelism_threads' not in flags:
    flags += f' --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={n}'
  os.environ['XLA_FLAGS'] = flags.strip()
  os.environ.setdefault('OMP_NUM_THREADS', str(n))
  os.environ.setdefault('MKL_NUM_THREADS', str(n))
  # Idle OpenMP threads sleep instead of spinning. On a shared, oversubscribed machine torch's
  # default (spin) made its steps 10-20x slower (every barrier waits on a preempted spinner);
  # measured 1.8 s -> 0.08 s per MI-DPG step at batch 4096 on 2 busy cores.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  return n


ARGS = parse_args() if __name__ == '__main__' else None
THREADS = set_threads(ARGS.threads if ARGS else 0)

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from midpg_jax.data import load_dataset, pipeline  # noqa: E402
from midpg_jax.models import build_model, mi_weight  # noqa: E402
from midpg_jax.train_state import (TrainState, init_variables, make_optimizer,  # noqa: E402
                                   make_predict_step, make_train_step, model_inputs)

try:
  import torch  # noqa: E402
except ImportError:  # JAX-only runs still work
  torch = None

N_BATCHES = 3  # distinct batches cycled through per contender and batch size
_PARAMS: dict = {}  # (model name, vocab sizes) -> initial params, shared by same-shape contenders


# ---------------------------------------------------------------------------------------------
# Set-up helpers

def load_config(path: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def make_data(config, batch_size: int, vocab0: int | None = None):
  """The config's synthetic data with just enough rows for N_BATCHES batches."""
  c = config.data.copy_and_resolve_references()
  c.num_train, c.num_val, c.num_test = batch_size * N_BATCHES, 256, 256
  if vocab0:
    c.vocab_sizes = (int(vocab0),) + tuple(c.vocab_sizes[1:])
  ds = load_dataset(c)
  host = list(pipeline.train_batches(ds.splits['train'], batch_size, 0, 0))
  return ds, [model_inputs(b) for b in host]


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


def device_info() -> dict:
  info = {'platform': platform.platform(), 'python': platform.python_version(),
          'cpu_count': os.cpu_count(), 'threads': THREADS,
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'jax': jax.__version__,
          'jax_devices': [str(d) for d in jax.devices()],
          'jax_device_kind': jax.devices()[0].device_kind, 'jax_backend': jax.default_backend()}
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    info['cpu_model'] = names[0] if names else platform.processor()
  except OSError:
    info['cpu_model'] = platform.processor()
  if torch is not None:
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
    info['torch_device'] = torch_device()
    if torch.cuda.is_available():
      info['torch_device_name'] = torch.cuda.get_device_name(0)
  return info


def torch_device() -> str:
  return 'cuda' if torch is not None and torch.cuda.is_available() else 'cpu'


def torch_sync():
  if torch is not None and torch.cuda.is_available():
    torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# Contenders. Each builds once (`build`, parameters shared across batch sizes), then per batch
# size `stage(batches)`, `warmup()`, and `train(k)` / `predict(k)`: k steps, synced.

class JaxContender:
  framework = 'jax'

  def __init__(self, name, config, model_overrides=None, train_overrides=None, dtype='f32',
               donate=None, label=None):
    self.name, self.label = name, label or name
    self.config = config.copy_and_resolve_references()
    self.config.model.update(model_overrides or {})
    self.config.train.update(train_overrides or {})
    self.dtype = dtype
    # The trainer's policy (partitioning.py): donate the state on accelerators, not on CPU.
    self.donate = (jax.default_backend() != 'cpu') if donate is None else donate
    self.state = None

  def build(self, spec, sample_batch):
    self.model = build_model(self.config.model, spec)
    self.tx = make_optimizer(self.config.train, 1_000_000)
    t0 = time.perf_counter()
    key = (self.config.model.name, spec.cat_vocab_sizes, spec.multi_vocab_sizes)
    if key not in _PARAMS:  # Flax init once per model shape (its compilation is slow on CPU)
      init = jax.jit(lambda k: init_variables(self.model, sample_batch, k))
      _PARAMS[key] = init(jax.random.key(0))['params']
    params = _PARAMS[key]
    if self.donate:  # a donated state must own its buffers
      params = jax.tree_util.tree_map(jnp.copy, params)
    self.state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state={},
                            opt_state=self.tx.init(params), rng=jax.random.key(1))
    jax.block_until_ready(self.state)
    self.init_s = time.perf_counter() - t0
    step = make_train_step(self.model, self.tx, mi_weight(self.config.model))
    predict = make_predict_step(self.model)
    if self.dtype == 'bf16':
      step, predict = bf16_train_step(self.model, self.tx, self.config), bf16_predict(self.model)
    self.train_step = jax.jit(step, donate_argnums=(0,) if self.donate else ())
    self.predict_step = jax.jit(predict)
    return self

  def stage(self, host_batches):
    self.batches = [jax.device_put(b) for b in host_batches]
    self.i = 0

  def cost_flops(self) -> float | None:
    try:
      cost = self.train_step.lower(self.state, self.batches[0]).compile().cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      return float(cost.get('flops', float('nan')))
    except Exception:  # cost analysis is best-effort
      return None

  def warmup(self):
    t0 = time.perf_counter()
    self.train(2)
    self.predict(2)
    return time.perf_counter() - t0

  def train(self, k):
    state, metrics = self.state, None
    for _ in range(k):
      state, metrics = self.train_step(state, self.batches[self.i % len(self.batches)])
      self.i += 1
    jax.block_until_ready((state, metrics))
    self.state = state

  def predict(self, k):
    out = None
    for j in range(k):
      out = self.predict_step(self.state, self.batches[j % len(self.batches)])
    jax.block_until_ready(out)


def _bf16_apply(model):
  """Mixed precision without touching the models: float32 master parameters are cast to bf16
  and every dense layer's input is cast to bf16 (a Flax method interceptor)."""
  import flax.linen as nn
  from midpg_jax.models.midpg import ModulatedDense

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and isinstance(context.module,
                                                        (nn.Dense, ModulatedDense)):
      args = (args[0].astype(jnp.bfloat16),) + tuple(args[1:])
    return next_fun(*args, **kwargs)

  def apply(params, model_state, batch, train, rngs=None):
    cast = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
    with nn.intercept_methods(interceptor):
      out = model.apply({'params': cast, **model_state}, batch, train=train, rngs=rngs)
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), out)
  return apply


def bf16_train_step(model, tx, config):
  import optax
  from midpg_jax import objective, sparse_optim
  if isinstance(tx, sparse_optim.RowSparseOptimizer):
    raise SystemExit('--dtype bf16 is implemented for the dense optimizer only')
  apply = _bf16_apply(model)
  weight = mi_weight(config.model)

  def step(state, batch):
    rng, dropout_rng = jax.random.split(state.rng)

    def loss_of(params):
      out = apply(params, state.model_state, batch, True, {'dropout': dropout_rng})
      return objective.loss_fn(out, batch, weight)

    (loss, parts), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state, rng=rng), {'loss': loss, **parts}
  return step


def bf16_predict(model):
  apply = _bf16_apply(model)
  return lambda state, batch: jax.nn.sigmoid(apply(state.params, state.model_state, batch,
                                                   False)['logits'])


class TorchContender:
  framework = 'torch'

  def __init__(self, name, config, compiled=False, model_name='midpg', dtype='f32', label=None):
    self.name, self.label = name, label or name
    self.config = config.copy_and_resolve_references()
    self.config.model.name = model_name
    self.compiled, self.dtype = compiled, dtype
    self.device = torch_device()

  def build(self, spec, sample_batch):
    from reference import torch_midpg as tm
    self.tm = tm
    torch.manual_seed(0)
    # Sort + one matmul per scenario segment (segment sizes read on the host), in both modes:
    # compiled with dynamic=True it graph-breaks there but does not recompile per batch, and it
    # measured faster than compiling the static-shape 'masked' path (S x the FLOPs).
    path = 'segment'
    sparse_rows = 0
    if self.config.train.get('sparse_embeddings', False):
      from midpg_jax.sparse_optim import MIN_ROWS
      sparse_rows = 0 if self.compiled else MIN_ROWS  # inductor has no sparse gradients
    self.model = tm.build_torch_model(self.config.model, spec, scenario_matmul=path,
                                      sparse_min_rows=sparse_rows).to(self.device)
    self.opt = tm.make_adam(self.model, lr=float(self.config.train.learning_rate))
    weight = mi_weight(self.config.model)
    autocast = self.dtype == 'bf16'
    model = self.model

    def loss_of(b):
      with torch.autocast(self.device, dtype=torch.bfloat16, enabled=autocast):
        out = model(b)
      return tm.loss_fn({k: v.float() for k, v in out.items()}, b, weight)[0]

    def forward(b):
      with torch.autocast(self.device, dtype=torch.bfloat16, enabled=autocast):
        return torch.sigmoid(model(b)['logits'].float())

    if self.compiled:
      loss_of = torch.compile(loss_of, dynamic=True)
      forward = torch.compile(forward, dynamic=True)
      opt_step = torch.compile(self.opt.step)
    else:
      opt_step = self.opt.step
    self._loss, self._forward, self._opt_step = loss_of, forward, opt_step
    self.init_s = 0.0
    return self

  def stage(self, host_batches):
    self.batches = [self.tm.to_torch_batch(b, self.device) for b in host_batches]
    self.i = 0

  def warmup(self):
    t0 = time.perf_counter()
    self.train(2)
    self.predict(2)
    return time.perf_counter() - t0

  def train(self, k):
    for _ in range(k):
      b = self.batches[self.i % len(self.batches)]
      self.i += 1
      self.opt.zero_grad(set_to_none=True)
      loss = self._loss(b)
      loss.backward()
      self._opt_step()
    torch_sync()

  def predict(self, k):
    with torch.no_grad():
      for j in range(k):
        out = self._forward(self.batches[j % len(self.batches)])
    torch_sync()
    return out


def make_contenders(args, config) -> list:
  sparse = bool(config.train.get('sparse_embeddings', False))
  path = config.model.scenario_matmul
  cs = [JaxContender('jax', config, dtype=args.dtype,
                     label=f'JAX MI-DPG ({path}{", row-sparse emb." if sparse else ""})'),
        JaxContender('jax_backbone', config, {'name': 'mlp'}, dtype=args.dtype,
                     label='JAX plain backbone (mlp)')]
  if torch is not None and not args.no_torch:
    cs.append(TorchContender('torch_eager', config, dtype=args.dtype,
                             label='PyTorch eager MI-DPG' + (' (SparseAdam emb.)' if sparse
                                                             else '')))
    if not args.no_compile:
      cs.append(TorchContender('torch_compile', config, compiled=True, dtype=args.dtype,
                               label='torch.compile MI-DPG'))
  if not args.no_paths:
    from midpg_jax.models.midpg import SCENARIO_MATMULS
    for other in SCENARIO_MATMULS:
      if other != path:
        cs.append(JaxContender(f'jax_{other}', config, {'scenario_matmul': other},
                               dtype=args.dtype, label=f'JAX MI-DPG ({other})'))
    if args.dtype == 'f32':
      cs.append(JaxContender(f'jax_{"dense" if sparse else "sparse"}_emb', config,
                             train_overrides={'sparse_embeddings': not sparse},
                             label=f'JAX MI-DPG ({path}, '
                             f'{"dense Adam" if sparse else "row-sparse LazyAdam"} emb.)'))
  return cs


PRIMARY = ('jax', 'jax_backbone', 'torch_eager', 'torch_compile')  # inference + memory measured


# ---------------------------------------------------------------------------------------------
# Measurements

def stats(times_s: list[float]) -> dict:
  a = np.asarray(times_s) * 1e3
  return {'median_ms': float(np.median(a)), 'p25_ms': float(np.percentile(a, 25)),
          'p75_ms': float(np.percentile(a, 75)), 'min_ms': float(a.min()),
          'max_ms': float(a.max()), 'n': int(a.size)}


def alternate(contenders, fn_name, k, reps) -> dict:
  """{name: [seconds per step]}: every repetition runs each contender once, rotating order."""
  out = {c.name: [] for c in contenders}
  for r in range(reps):
    order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
    for c in order:
      t0 = time.perf_counter()
      getattr(c, fn_name)(k)
      out[c.name].append((time.perf_counter() - t0) / k)
  return out


def matmul_rate(n: int, reps: int) -> dict:
  """GFLOP/s of an n x n float32 matmul, JAX and torch alternating."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  fns = {'jax': lambda: f(a, a).block_until_ready()}
  if torch is not None:
    ta = torch.randn(n, n, device=torch_device())
    torch.mm(ta, ta)
    fns['torch'] = lambda: (torch.mm(ta, ta), torch_sync())
  times = {k: [] for k in fns}
  for _ in range(max(reps, 5)):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      for _ in range(3):
        fn()
      times[k].append((time.perf_counter() - t0) / 3)
  flops = 2 * n ** 3
  return {k: {'gflops_median': flops / np.median(v) / 1e9, 'gflops_best': flops / min(v) / 1e9}
          for k, v in times.items()} | {'n': n}


def analytic_flops(config, spec) -> dict:
  """FLOPs per example from the layer shapes: matmuls only (2 per multiply-add).

  forward: embeddings are lookups (0); hidden layers sum 2 d_in d_out; output 2 d_last.
  training: 3x the forward (forward, input gradient, weight gradient). MI-DPG also builds its
  S modulated weights once per step (amortised over the batch; reported separately).
  """
  m = config.model
  d0 = (len(spec.cat_names) + len(spec.multi_names)) * int(m.embed_dim) + spec.num_dense
  dims = [d0, *[int(w) for w in m.hidden]]
  fwd = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:])) + 2 * dims[-1]
  S, r, rs = spec.num_scenarios, int(m.midpg.rank), int(m.midpg.specific_rank)
  per_step = sum(S * (2 * a * r * r + 2 * a * (r + rs) * b + 2 * a * b)
                 for a, b in zip(dims[:-1], dims[1:]))
  return {'forward_per_example': fwd, 'train_per_example': 3 * fwd,
          'midpg_weight_generation_per_step_fwd': per_step, 'input_width': d0}


def run_throughput(args, config, contenders, results):
  primary = [c for c in contenders if c.name in PRIMARY]
  built_for = None
  for bs in args.batch_sizes:
    print(f'\n== batch {bs}', flush=True)
    ds, host = make_data(config, bs)
    if built_for is None:
      for c in contenders:
        t0 = time.perf_counter()
        c.build(ds.spec, host[0] if c.framework == 'jax' else None)
        print(f'  built {c.name} ({time.perf_counter() - t0:.1f}s)', flush=True)
      built_for = bs
      results['flops']['analytic'] = analytic_flops(config, ds.spec)
    for c in contenders:
      c.stage(host)
      w = c.warmup()
      print(f'  warm-up {c.name}: {w:.1f}s (incl. compilation)', flush=True)
      results['compile_s'].setdefault(c.name, {})[str(bs)] = w
    for c in contenders:
      if c.name in ('jax', 'jax_backbone'):
        flops = c.cost_flops()
        if flops:
          results['flops'].setdefault('xla_cost_analysis_train_per_example', {}).setdefault(
              c.name, {})[str(bs)] = flops / bs
    train = alternate(contenders, 'train', args.steps, args.reps)
    infer = alternate(primary, 'predict', args.steps, args.reps)
    for c in contenders:
      entry = {'label': c.label, 'train_step': stats(train[c.name]),
               'train_examples_per_s': bs / float(np.median(train[c.name]))}
      if c.name in infer:
        entry['predict_step'] = stats(infer[c.name])
        entry['predict_examples_per_s'] = bs / float(np.median(infer[c.name]))
      results['throughput'].setdefault(str(bs), {})[c.name] = entry
      print(f'  {c.name:18s} train {entry["train_step"]["median_ms"]:9.1f} ms '
            f'[{entry["train_step"]["p25_ms"]:.1f}-{entry["train_step"]["p75_ms"]:.1f}] '
            f'{entry["train_examples_per_s"]:11,.0f} ex/s' +
            (f'   predict {entry["predict_examples_per_s"]:11,.0f} ex/s'
             if 'predict_step' in entry else ''), flush=True)
    for c in contenders:
      c.batches = None
    save(args, results)


def run_memory(args, results, batch_sizes, names):
  """Peak RSS of a fresh subprocess per (contender, batch size)."""
  for bs in batch_sizes:
    for name in names:
      cmd = [sys.executable, os.path.abspath(__file__), '--probe-memory', name, '--probe-batch',
             str(bs), '--config', args.config, '--dtype', args.dtype,
             '--threads', str(THREADS)]
      t0 = time.perf_counter()
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
      line = [l for l in proc.stdout.splitlines() if l.startswith('MEMORY ')]
      if proc.returncode or not line:
        print(f'  memory {name} @ {bs}: probe failed: {proc.stderr[-400:]}', flush=True)
        continue
      mem = json.loads(line[-1][len('MEMORY '):])
      results['memory'].setdefault(str(bs), {})[name] = mem
      print(f'  memory {name:14s} @ {bs}: peak RSS {mem["peak_rss_mb"]:8.0f} MB '
            f'(+{mem["peak_rss_mb"] - mem["base_rss_mb"]:.0f} MB over the process before the '
            f'model; {time.perf_counter() - t0:.0f}s)', flush=True)
  save(args, results)


def probe_memory(args):
  config = load_config(args.config)
  bs = args.probe_batch
  ds, host = make_data(config, bs)
  base = rss_mb()
  c = {c.name: c for c in make_contenders(args, config)}[args.probe_memory]
  c.build(ds.spec, host[0] if c.framework == 'jax' else None)
  c.stage(host)
  c.warmup()
  c.train(3)
  c.predict(3)
  peak, how = peak_rss_mb()
  out = {'base_rss_mb': base, 'peak_rss_mb': peak, 'end_rss_mb': rss_mb(), 'measure': how}
  if c.framework == 'jax' and jax.default_backend() != 'cpu':
    stats_ = jax.devices()[0].memory_stats() or {}
    out['device_peak_mb'] = stats_.get('peak_bytes_in_use', 0) / 2 ** 20
  if c.framework == 'torch' and torch.cuda.is_available():
    out['device_peak_mb'] = torch.cuda.max_memory_allocated() / 2 ** 20
  print('MEMORY ' + json.dumps(out), flush=True)


def run_pipeline(args, config, results, bs=4096):
  """The trainer's loop shape: where do input and host syncs cost time?"""
  try:
    from midpg_jax.trainer import prefetch
  except Exception as e:  # the trainer is edited concurrently; report and go on
    print(f'  pipeline section skipped: cannot import trainer.prefetch ({e})', flush=True)
    return
  c = config.data.copy_and_resolve_references()
  steps = 2 * args.steps
  c.num_train, c.num_val, c.num_test = bs * steps, 256, 256
  ds = load_dataset(c)
  split = ds.splits['train']
  con = JaxContender('jax', config).build(ds.spec, model_inputs(next(
      pipeline.train_batches(split, bs, 0, 0))))
  on_device = [jax.device_put(model_inputs(b)) for b in pipeline.train_batches(split, bs, 0, 0)]
  state = [con.state]

  def run(kind):
    st = state[0]
    if kind == 'on_device':
      batches = iter(on_device)
    else:
      host = (jax.device_put(model_inputs(b)) for b in pipeline.train_batches(split, bs, 0, 0))
      batches = prefetch(host, 0 if kind == 'inline' else int(config.train.prefetch))
    metrics = []
    for b in batches:
      st, m = con.train_step(st, b)
      if kind == 'prefetch_sync':
        float(m['loss'])  # a host sync per step
      else:
        metrics.append(m)
    jax.block_until_ready((st, metrics))
    state[0] = st

  kinds = ['on_device', 'inline', 'prefetch', 'prefetch_sync']
  for k in kinds:
    run(k)  # warm-up
  times = {k: [] for k in kinds}
  for r in range(args.reps):
    for k in kinds[r % 4:] + kinds[:r % 4]:
      t0 = time.perf_counter()
      run(k)
      times[k].append((time.perf_counter() - t0) / steps)
  labels = {'on_device': 'batches already on device (upper bound)',
            'inline': 'host batches, device_put inline (no prefetch)',
            'prefetch': f'host batches via trainer.prefetch({int(config.train.prefetch)}), '
                        'metrics kept on device',
            'prefetch_sync': 'as prefetch, plus a host sync (float(loss)) every step'}
  results['pipeline'] = {'batch_size': bs, **{k: {'label': labels[k], 'step': stats(v),
                                                  'examples_per_s': bs / float(np.median(v))}
                                              for k, v in times.items()}}
  for k in kinds:
    e = results['pipeline'][k]
    print(f'  pipeline {k:14s} {e["step"]["median_ms"]:8.1f} ms/step '
          f'{e["examples_per_s"]:10,.0f} ex/s  ({labels[k]})', flush=True)
  save(args, results)


def run_vocab_sweep(args, config, results):
  bs = args.sweep_batch
  for vocab in args.vocab_sizes:
    ds, host = make_data(config, bs, vocab0=vocab)
    cons = [JaxContender('dense', config, train_overrides={'sparse_embeddings': False}),
            JaxContender('sparse', config, train_overrides={'sparse_embeddings': True},
                         donate=False),
            JaxContender('sparse_donated', config, train_overrides={'sparse_embeddings': True},
                         donate=True)]
    for c in cons:
      c.build(ds.spec, host[0])
      c.stage(host)
      c.train(2)
    times = alternate(cons, 'train', args.steps, max(3, args.reps - 2))
    entry = {c.name: stats(times[c.name]) for c in cons}
    results['vocab_sweep'][str(vocab)] = {'batch_size': bs, 'table_rows': vocab,
                                          'embed_dim': int(config.model.embed_dim), **entry}
    print(f'  vocab {vocab:>10,}: ' + '  '.join(
        f'{c.name} {entry[c.name]["median_ms"]:8.1f} ms' for c in cons), flush=True)
    del cons
    _PARAMS.clear()  # the tables of this vocabulary
    save(args, results)


# ---------------------------------------------------------------------------------------------
# The zoo against its PyTorch references (`--models star,mmoe,ple`; reference/torch_zoo.py)

class ZooJaxContender(JaxContender):
  """A zoo model's JAX train step, with its `model_state` (STAR's running statistics)."""

  def build(self, spec, sample_batch):
    if self.dtype != 'f32':
      raise SystemExit('--models measures float32 only')
    self.model = build_model(self.config.model, spec)
    self.tx = make_optimizer(self.config.train, 1_000_000)
    t0 = time.perf_counter()
    variables = dict(jax.jit(lambda k: init_variables(self.model, sample_batch, k))(
        jax.random.key(0)))
    params = variables.pop('params')
    self.state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                            opt_state=self.tx.init(params), rng=jax.random.key(1))
    jax.block_until_ready(self.state)
    self.init_s = time.perf_counter() - t0
    self.train_step = jax.jit(make_train_step(self.model, self.tx, 0.0),
                              donate_argnums=(0,) if self.donate else ())
    self.predict_step = jax.jit(make_predict_step(self.model))
    return self


class ZooTorchContender(TorchContender):
  """A zoo model's PyTorch reference: eager or torch.compile, one scenario loop form."""

  def __init__(self, name, config, model_name, compiled=False, loop='subset', label=None):
    super().__init__(name, config, compiled=compiled, model_name=model_name, label=label)
    self.loop = loop

  def build(self, spec, sample_batch):
    from reference import torch_midpg as tm
    from reference import torch_zoo as tz
    self.tm = tm
    torch.manual_seed(0)
    model = self.model = tz.build_torch_zoo_model(self.config.model, spec, self.loop)
    model.to(self.device).train()
    self.opt = tm.make_adam(model, lr=float(self.config.train.learning_rate))

    def loss_of(b):
      return tm.loss_fn(model(b), b, 0.0)[0]

    def forward(b):
      return torch.sigmoid(model(b)['logits'])

    if self.compiled:  # dynamic=True: the 'subset' loop's mask sizes change with every batch
      loss_of, forward = torch.compile(loss_of, dynamic=True), torch.compile(forward, dynamic=True)
      self._opt_step = torch.compile(self.opt.step)
    else:
      self._opt_step = self.opt.step
    self._loss, self._forward, self.init_s = loss_of, forward, 0.0
    return self

  def predict(self, k):
    self.model.eval()  # inference reads STAR's running statistics, as the JAX predict step does
    try:
      return super().predict(k)
    finally:
      self.model.train()


def make_zoo_contenders(args, config) -> list:
  """Per model: JAX (the config's zoo settings), PyTorch eager and torch.compile per loop form."""
  from reference import torch_zoo as tz
  if torch is None or args.no_torch:
    raise SystemExit('--models compares against PyTorch: install torch (requirements-bench.txt)')
  loops = [l for l in args.zoo_loops.split(',') if l]
  if set(loops) - set(tz.SCENARIO_LOOPS) or not loops:
    raise SystemExit(f'--zoo-loops takes {tz.SCENARIO_LOOPS}, got {args.zoo_loops!r}')
  cs = []
  for name in args.models.split(','):
    if name not in tz.MODELS:
      raise SystemExit(f'--models: no PyTorch reference for {name!r}; choose from {tz.MODELS}')
    routing = config.model.zoo_scenario_matmul
    cs.append(ZooJaxContender(f'{name}/jax', config, {'name': name},
                              label=f'JAX {name} ({routing})'))
    for other in [r for r in args.zoo_routings.split(',') if r and r != routing]:
      cs.append(ZooJaxContender(f'{name}/jax_{other}', config,
                                {'name': name, 'zoo_scenario_matmul': other},
                                label=f'JAX {name} ({other})'))
    for loop in loops:
      cs.append(ZooTorchContender(f'{name}/torch_eager_{loop}', config, name, loop=loop,
                                  label=f'PyTorch eager {name} ({loop} loop)'))
      if not args.no_compile:
        cs.append(ZooTorchContender(f'{name}/torch_compile_{loop}', config, name, compiled=True,
                                    loop=loop, label=f'torch.compile {name} ({loop} loop)'))
  return cs


def run_zoo(args, config, results):
  """Every zoo contender in one alternating run per batch size; ratios against the fastest torch
  contender of each kind (eager / compile) of the same model."""
  contenders = make_zoo_contenders(args, config)
  results['zoo'] = {}
  for bs in args.batch_sizes:
    print(f'\n== zoo, batch {bs}', flush=True)
    ds, host = make_data(config, bs)
    for c in contenders:
      if getattr(c, 'model', None) is None:
        t0 = time.perf_counter()
        c.build(ds.spec, host[0] if c.framework == 'jax' else None)
        print(f'  built {c.name} ({time.perf_counter() - t0:.1f}s)', flush=True)
        if c.framework == 'torch':  # same model on both sides: the same parameter shapes
          from reference import torch_zoo as tz
          jax_twin = next(j for j in contenders if j.name == c.name.split('/')[0] + '/jax')
          if (jax.tree.map(np.shape, tz.params_as_jax_tree(c.model))
              != jax.tree.map(np.shape, jax.device_get(jax_twin.state.params))):
            raise SystemExit(f'{c.name}: the JAX model and its PyTorch reference differ in '
                             'their parameters (is build_model the same model?)')
      c.stage(host)
      w = c.warmup()
      print(f'  warm-up {c.name}: {w:.1f}s (incl. compilation)', flush=True)
      results['compile_s'].setdefault(c.name, {})[str(bs)] = w
    train = alternate(contenders, 'train', args.steps, args.reps)
    infer = alternate(contenders, 'predict', args.steps, args.reps)
    row = results['zoo'].setdefault(str(bs), {})
    for c in contenders:
      model, kind = c.name.split('/')
      row.setdefault(model, {})[kind] = {
          'label': c.label, 'train_step': stats(train[c.name]),
          'train_examples_per_s': bs / float(np.median(train[c.name])),
          'predict_step': stats(infer[c.name]),
          'predict_examples_per_s': bs / float(np.median(infer[c.name]))}
    for model, entries in row.items():
      jax_ms = entries['jax']['train_step']['median_ms']
      ratios = {}
      for kind in ('torch_eager', 'torch_compile'):
        best = min(((e['train_step']['median_ms'], k) for k, e in entries.items()
                    if k.startswith(kind)), default=None)
        ratios[f'jax_speedup_vs_{kind}'] = best[0] / jax_ms if best else None
        ratios[f'best_{kind}'] = best[1] if best else None
      entries['ratios'] = ratios
      print(f'  {model:6s} JAX {jax_ms:8.1f} ms | ' + ' | '.join(
          f'{k} {e["train_step"]["median_ms"]:8.1f} ms' for k, e in entries.items()
          if k.startswith('torch')) + ' | JAX speed-up: ' + ', '.join(
          f'{v:.2f}x vs {k[len("jax_speedup_vs_"):]}' for k, v in ratios.items()
          if k.startswith('jax_speedup') and v), flush=True)
    for c in contenders:
      c.batches = None
    save(args, results)
  for c in contenders:  # free the compiled graphs before the report
    c.model = None


def zoo_markdown(results) -> str:
  lines = ['', '| batch | model | contender | train step ms (median [p25-p75]) | train ex/s | '
           'predict ex/s |', '|---|---|---|---|---|---|']
  for bs, row in results.get('zoo', {}).items():
    for model, entries in row.items():
      for kind, e in entries.items():
        if kind != 'ratios':
          s = e['train_step']
          lines.append(f"| {bs} | {model} | {e['label']} | {s['median_ms']:.1f} "
                       f"[{s['p25_ms']:.1f}-{s['p75_ms']:.1f}] | "
                       f"{e['train_examples_per_s']:,.0f} | {e['predict_examples_per_s']:,.0f} |")
  lines += ['', '| batch | model | JAX train-step speed-up vs PyTorch eager (best loop) | '
            'vs torch.compile (best loop) |', '|---|---|---|---|']
  for bs, row in results.get('zoo', {}).items():
    for model, entries in row.items():
      r = entries['ratios']
      cell = lambda k: (f"{r[f'jax_speedup_vs_{k}']:.2f}x ({r[f'best_{k}'].split('_')[-1]})"
                        if r.get(f'jax_speedup_vs_{k}') else '-')
      lines.append(f"| {bs} | {model} | {cell('torch_eager')} | {cell('torch_compile')} |")
  return '\n'.join(lines) + '\n'


def main_zoo(args, config, results, t_start):
  run_zoo(args, config, results)
  results['total_s'] = time.perf_counter() - t_start
  save(args, results)
  md = markdown(results) + zoo_markdown(results)
  with open(os.path.join(args.out, 'bench.md'), 'w') as f:
    f.write(md)
  print('\n' + md)
  print(f"wrote {args.out}/bench.json, bench.md ({results['total_s']:.0f}s)")


# ---------------------------------------------------------------------------------------------
# Report

def save(args, results):
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'bench.json'), 'w') as f:
    json.dump(results, f, indent=1, default=float)


def markdown(results) -> str:
  d = results['device']
  lines = [f"Device: {d.get('cpu_model', '?')} ({d['cpu_count']} cores), JAX backend "
           f"{d['jax_backend']} ({d['jax_device_kind']})" +
           (f", torch {d.get('torch_device')}" if 'torch' in d else '') +
           f"; threads: XLA {d['threads']}, torch {d.get('torch_threads', '-')}; "
           f"dtype {results['args']['dtype']}; {results['args']['reps']} repetitions x "
           f"{results['args']['steps']} steps, contenders alternating.", '']
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
  fig.savefig(os.path.join(args.out, 'bench.png'), dpi=120)
  plt.close(fig)


def main(args):
  if torch is not None:
    torch.set_num_threads(THREADS)
  if args.probe_memory:
    return probe_memory(args)
  config = load_config(args.config)
  results = {'args': vars(args), 'device': device_info(), 'throughput': {}, 'compile_s': {},
             'flops': {}, 'memory': {}, 'vocab_sweep': {}, 'pipeline': {},
             'config': {'model': config.model.to_dict(), 'train': config.train.to_dict()}}
  d = results['device']
  print(f"device: {d.get('cpu_model')} | JAX {d['jax_backend']} {d['jax_devices']} | "
        f"torch {d.get('torch', 'not installed')} on {d.get('torch_device', '-')} | threads: "
        f"XLA intra-op {THREADS} (XLA_FLAGS='{d['xla_flags']}'), torch "
        f"{d.get('torch_threads', '-')}", flush=True)
  t_start = time.perf_counter()
  if args.models:
    return main_zoo(args, config, results, t_start)
  results['matmul'] = matmul_rate(args.matmul_size, args.reps)
  print(f"f32 matmul {args.matmul_size}^2: " + ', '.join(
      f"{k} {v['gflops_median']:.1f} GFLOP/s" for k, v in results['matmul'].items()
      if isinstance(v, dict)), flush=True)
  contenders = make_contenders(args, config)
  run_throughput(args, config, contenders, results)
  del contenders
  if not args.no_pipeline:
    print('\n== pipeline', flush=True)
    run_pipeline(args, config, results)
  if not args.no_memory:
    print('\n== peak memory (one subprocess per contender)', flush=True)
    names = [n for n in PRIMARY if not (n.startswith('torch') and (torch is None or args.no_torch))
             and not (n == 'torch_compile' and (args.no_compile or args.quick))]
    run_memory(args, results, [4096] if args.quick else args.batch_sizes, names)
  if args.vocab_sweep:
    print('\n== vocab sweep', flush=True)
    run_vocab_sweep(args, config, results)
  results['total_s'] = time.perf_counter() - t_start
  save(args, results)
  md = markdown(results)
  with open(os.path.join(args.out, 'bench.md'), 'w') as f:
    f.write(md)
  plot(args, results)
  print('\n' + md)
  print(f"wrote {args.out}/bench.json, bench.md, bench.png ({results['total_s']:.0f}s)")


if __name__ == '__main__':
  main(ARGS)

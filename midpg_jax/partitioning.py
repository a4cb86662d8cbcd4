"""The device mesh and the sharding rules: one `Partitioner` per run (RecML-style).

Mesh: two named axes, `data` and `model`, shaped by `config.mesh.shape` (e.g. (-1, 1): every device
on `data`, pure data parallelism; (4, 2): 4-way data x 2-way model). On several processes the
`model` axis is kept inside a process (fast links) and `data` spans processes.

Shardings:
  batch        every column sharded on `data` along its leading (example) dimension, replicated
               on `model`; each process builds its rows and they become one global array
               (`jax.make_array_from_process_local_data`).
  params       `config.mesh.param_rules`: (regex on the '/'-joined param path, PartitionSpec)
               pairs, first match wins; the default shards every embedding table `embed_<field>`
               (vocab, E) by rows on `model`; no match = replicated.
               A table whose vocabulary does not divide by the `model` axis size is replicated and
               logged: padding its rows would change the checkpoint's shapes with the mesh (a
               checkpoint must restore onto any mesh) and its initial values; such tables are the
               small ones in practice (a user who wants a big one split picks a divisible vocab).
  opt_state    follows the parameters: an optimizer leaf whose tree path ends with a parameter's
               path (optax nests `mu`/`nu`/... over the param tree) gets that parameter's spec when
               its shape matches (or only the row split when just the leading dim matches, as for
               row-wise accumulators); anything else (counts, schedules) is replicated.
  model_state, step, rng   replicated.

A single device is the 1 x 1 mesh: the same code path, the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
from typing import Any, Callable, Iterable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from midpg_jax.errors import ConfigError

log = logging.getLogger(__name__)

AXES = ('data', 'model')
DEFAULT_MESH_SHAPE = (-1, 1)
# (regex searched in the '/'-joined param path, partition spec of the param).
DEFAULT_PARAM_RULES = ((r'(^|/)embed_[^/]*$', ('model', None)),)


# ---------------------------------------------------------------------------------------------
# Multi-process start-up.

def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value not in (None, '') else None


# What jax.distributed.initialize raises when it was given no coordinator and its own cluster
# detection (SLURM, Open MPI, Cloud TPU pod slices, Kubernetes jobs; jax/_src/clusters) found none.
_NO_CLUSTER_MESSAGE = 'coordinator_address should be defined'


def initialize_distributed(mode: str = 'auto', coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Starts JAX's multi-process runtime when asked or when launched as several processes.

  Must run before anything touches a JAX device. Returns whether it initialised.
    mode 'off':  single process, whatever the environment says.
    mode 'on':   `jax.distributed.initialize` with the given values; those left None are filled
                 in by JAX from the environment (Cloud TPU pod slices, SLURM, Open MPI, ...).
    mode 'auto': as 'on', except that a single process runs when nothing is given (flags or
                 JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) and JAX's own
                 cluster detection finds no launcher; `--num_processes=1` alone is one process.
  Which launcher is which, and what it says about the processes, is left to JAX.
  """
  if mode not in ('auto', 'on', 'off'):
    raise ConfigError(f"unknown distributed mode {mode!r}; choose 'auto', 'on' or 'off'")
  if mode == 'off':
    return False
  # JAX reads JAX_COORDINATOR_ADDRESS itself; the process count and id it takes from a detected
  # cluster only, so the two variables are ours (documented with the flags).
  coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS') or None
  num_processes = num_processes if num_processes is not None else _env_int('JAX_NUM_PROCESSES')
  process_id = process_id if process_id is not None else _env_int('JAX_PROCESS_ID')
  if mode == 'auto' and num_processes == 1 and coordinator_address is None:
    return False
  if jax.distributed.is_initialized():
    return True
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except ValueError as e:
    nothing_given = all(v is None for v in (coordinator_address, num_processes, process_id))
    if mode == 'auto' and nothing_given and _NO_CLUSTER_MESSAGE in str(e):
      return False  # no launcher: one process
    raise
  log.info('process %d of %d (coordinator %s)', jax.process_index(), jax.process_count(),
           coordinator_address or 'found by JAX')
  return True


def define_flags() -> None:
  """The multi-process flags of train.py and eval.py."""
  from absl import flags
  flags.DEFINE_enum('distributed', 'auto', ['auto', 'on', 'off'],
                    "Multi-process runtime: 'auto' starts it when --coordinator_address / "
                    '--num_processes / --process_id (or JAX_COORDINATOR_ADDRESS, '
                    'JAX_NUM_PROCESSES, JAX_PROCESS_ID) are set or when JAX detects a cluster '
                    'launch (SLURM, Open MPI, Cloud TPU pod slice, Kubernetes job; JAX fills the '
                    "unset values in from it); 'on' always calls jax.distributed.initialize; "
                    "'off' = one process.")
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, reachable by all '
                      'processes (multi-host runs).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (usually one per host).')
  flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes - 1.')


def initialize_from_flags() -> bool:
  from absl import flags
  f = flags.FLAGS
  return initialize_distributed(f.distributed, f.coordinator_address, f.num_processes,
                                f.process_id)


def is_main_process() -> bool:
  return jax.process_index() == 0


def max_steps_in_flight() -> int:
  """How many train steps may be queued on the devices at once; 0 = no limit.

  2 on the CPU backend with several processes. There the XLA CPU client lets the host queue up to
  32 programs per device, and with two or more local devices per process a queued step can hang
  for ever: one process's devices wait inside a Gloo all-reduce while the other process's second
  device never launches its part of the same step (its launch waits on the per-device in-flight
  semaphore); 0 % CPU, SIGTERM ignored (a hang reproduced within 100 steps on 2 processes x 2 CPU
  devices; never with at most 2 steps queued, with 1 device per process or with one process).
  Waiting for step k-1 before queuing step k+1 keeps the devices busy and costs nothing
  measurable on CPU. GPUs and TPUs keep the unlimited queue.
  """
  if jax.process_count() > 1 and jax.default_backend() == 'cpu':
    return 2
  return 0


# ---------------------------------------------------------------------------------------------
# Mesh.

def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, int]:
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(AXES):
    raise ConfigError(f'mesh.shape must have {len(AXES)} entries {AXES}, got {shape}')
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ConfigError(f'mesh.shape entries must be positive, with at most one -1, got {shape}')
  known = math.prod(s for s in shape if s != -1)
  if num_devices % known:
    raise ConfigError(f'mesh.shape={shape} does not fit {num_devices} devices')
  shape = tuple(num_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != num_devices:
    raise ConfigError(f'mesh.shape={shape} uses {math.prod(shape)} devices, but there are '
                     f'{num_devices}; use -1 for the axis that takes the rest')
  return shape  # type: ignore[return-value]


def make_mesh(shape: Sequence[int], devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, model) mesh of Auto axes; on several processes `model` stays inside a process."""
  devices = list(devices if devices is not None else jax.devices())
  data, model = resolve_mesh_shape(shape, len(devices))
  axis_types = (AxisType.Auto,) * len(AXES)
  num_proc = len({d.process_index for d in devices})
  if num_proc > 1 and devices[0].platform != 'tpu':
    per_proc = len(devices) // num_proc
    if per_proc % model == 0 and data % num_proc == 0:
      ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
      grid = np.array(ordered).reshape(data, model)  # process p owns data rows [p*k, (p+1)*k)
      return Mesh(grid, AXES, axis_types=axis_types)
    log.warning('mesh.shape=(%d, %d): the model axis spans processes (%d devices each); model '
                'collectives will cross hosts', data, model, per_proc)
  return jax.make_mesh((data, model), AXES, axis_types=axis_types, devices=devices)


# ---------------------------------------------------------------------------------------------
# Rules.

def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_names(path) -> tuple[str, ...]:
  return tuple(_key_name(k) for k in path)


def _spec_tuple(spec) -> tuple:
  return tuple(spec) if spec is not None else ()


@dataclasses.dataclass
class ParamGroup:
  """One line of the start-up table."""
  name: str
  count: int
  size: int
  shape: tuple | None
  spec: P
  shard_shape: tuple | None
  note: str = ''


class Partitioner:
  """Owns the mesh and derives every sharding of a run from it."""

  def __init__(self, mesh_shape: Sequence[int] = DEFAULT_MESH_SHAPE,
               param_rules: Iterable = DEFAULT_PARAM_RULES, devices: Sequence[Any] | None = None):
    self.mesh = make_mesh(mesh_shape, devices)
    self.param_rules = [(re.compile(pattern), P(*_spec_tuple(spec)))
                        for pattern, spec in param_rules]
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P('data'))
    self._notes: dict[str, str] = {}
    self._data_layout()

  @classmethod
  def from_config(cls, config, devices: Sequence[Any] | None = None) -> 'Partitioner':
    mesh_cfg = config.get('mesh') if hasattr(config, 'get') else None
    if mesh_cfg is None:
      return cls(devices=devices)
    return cls(tuple(mesh_cfg.get('shape', DEFAULT_MESH_SHAPE)),
               tuple(mesh_cfg.get('param_rules', DEFAULT_PARAM_RULES)), devices)

  # -- axes -------------------------------------------------------------------------------------
  @property
  def data_size(self) -> int:
    return int(self.mesh.shape['data'])

  @property
  def model_size(self) -> int:
    return int(self.mesh.shape['model'])

  def _data_layout(self) -> None:
    """Which rows of every global batch this process loads.

    Processes whose devices hold the same data-axis positions load the same rows; the groups are
    numbered by their first position. `data_shard_index` / `data_shard_count` go to the pipeline
    as its process_index / process_count (= jax.process_index() / jax.process_count() on the usual
    meshes, where the model axis stays inside a process).
    """
    devices = np.asarray(self.mesh.devices)  # (data, model)
    positions: dict[int, set] = {}
    for i in range(devices.shape[0]):
      for d in devices[i]:
        positions.setdefault(d.process_index, set()).add(i)
    groups = sorted({frozenset(p) for p in positions.values()}, key=min)
    sizes = {len(g) for g in groups}
    if len(sizes) != 1 or sum(len(g) for g in groups) != self.data_size:
      raise ConfigError(f'mesh {dict(self.mesh.shape)}: processes hold overlapping or unequal '
                       'parts of the data axis; choose a mesh.shape whose model axis divides '
                       'the devices of one process')
    mine = frozenset(positions[jax.process_index()])
    self.data_shard_index = groups.index(mine)
    self.data_shard_count = len(groups)

  def local_batch_size(self, global_batch_size: int, what: str = 'train.batch_size') -> int:
    """Rows this process loads per global batch; the global batch must divide by `data`."""
    if global_batch_size % self.data_size:
      raise ConfigError(f'{what}={global_batch_size} does not divide by the {self.data_size} '
                       f'devices of the mesh data axis (mesh {dict(self.mesh.shape)})')
    return global_batch_size // self.data_shard_count

  def eval_batch_size(self, batch_size: int) -> int:
    """The global evaluation batch, rounded up to a multiple of the data axis (extra rows are
    padding of weight 0, so this never changes a metric)."""
    return -(-int(batch_size) // self.data_size) * self.data_size

  # -- batches ----------------------------------------------------------------------------------
  def shard_batch(self, local_batch):
    """This process's rows (numpy pytree) -> global arrays sharded on `data`."""
    def one(x):
      x = np.asarray(x)
      if jax.process_count() == 1:
        return jax.device_put(x, self.batch_sharding)
      global_shape = (x.shape[0] * self.data_shard_count,) + x.shape[1:]
      return jax.make_array_from_process_local_data(self.batch_sharding, x, global_shape)
    return jax.tree_util.tree_map(one, local_batch)

  # -- params and state -------------------------------------------------------------------------
  def param_spec(self, name: str, shape: tuple) -> P:
    for pattern, spec in self.param_rules:
      if pattern.search(name):
        if len(spec) > len(shape):
          raise ConfigError(f'mesh.param_rules: {spec} has more entries than {name} has '
                           f'dimensions {shape}')
        for dim, axis in zip(shape, spec):
          if axis is None:
            continue
          axes = axis if isinstance(axis, tuple) else (axis,)
          size = math.prod(int(self.mesh.shape[a]) for a in axes)
          if dim % size:
            self._notes[name] = (f'replicated: dimension {dim} does not divide by the {size} '
                                 f'devices of {axis!r}')
            return P()
        return spec
    return P()

  def param_specs(self, params) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, x: self.param_spec('/'.join(path_names(path)), tuple(x.shape)), params)

  def _follow_params(self, params, param_specs, tree) -> Any:
    """Specs for a tree whose leaves mirror parameters (optimizer moments, accumulators)."""
    by_path = {}
    for (path, x), spec in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree_util.tree_leaves(param_specs,
                                                         is_leaf=lambda s: isinstance(s, P))):
      by_path[path_names(path)] = (tuple(x.shape), spec)

    def spec_of(path, leaf):
      names = path_names(path)
      shape = tuple(getattr(leaf, 'shape', ()))
      for i in range(len(names)):
        hit = by_path.get(names[i:])
        if hit is None:
          continue
        p_shape, spec = hit
        if shape == p_shape:
          return spec
        if len(spec) and spec[0] is not None and shape and shape[0] == p_shape[0]:
          return P(spec[0])  # e.g. a row-wise accumulator (vocab,)
        return P()
      return P()

    return jax.tree_util.tree_map_with_path(spec_of, tree)

  def state_specs(self, abstract_state) -> Any:
    """PartitionSpecs of a TrainState (or abstract one) with fields step, params, model_state,
    opt_state, rng."""
    params = abstract_state.params
    p_specs = self.param_specs(params)
    rep = lambda tree: jax.tree_util.tree_map(lambda _: P(), tree)
    return abstract_state.replace(
        step=P(), params=p_specs, model_state=rep(abstract_state.model_state),
        opt_state=self._follow_params(params, p_specs, abstract_state.opt_state),
        rng=P())

  def state_shardings(self, abstract_state) -> Any:
    return jax.tree_util.tree_map(lambda s: NamedSharding(self.mesh, s),
                                  self.state_specs(abstract_state),
                                  is_leaf=lambda s: isinstance(s, P))

  def create_state(self, init_fn: Callable[[], Any]) -> tuple[Any, Any]:
    """(state, shardings): `init_fn()` (no arguments, e.g. closing over the seed) run under jit so
    every array is created directly in its shards."""
    abstract = jax.eval_shape(init_fn)
    shardings = self.state_shardings(abstract)
    # Compiled without XLA's backend optimisations: the program runs once, and optimising it was
    # most of a run's start (MI-DPG, tests' small config: 19.0 CPU-s to compile optimised, 5.7
    # for the whole setup without). The random bits are the same; the floats drawn from them can
    # differ in the last bit (measured <= 3e-8 on the embedding tables).
    init = jax.jit(init_fn, out_shardings=shardings).lower().compile(
        {'xla_backend_optimization_level': 0})
    return init(), shardings

  def abstract_state(self, state_or_shapes, shardings) -> Any:
    """ShapeDtypeStructs carrying this mesh's shardings (restore targets)."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_or_shapes,
        shardings)

  # -- steps ------------------------------------------------------------------------------------
  def _donate(self, force: bool) -> tuple[int, ...]:
    # Donation lets XLA update the state in place. On CPU it slowed dense steps down, but the
    # row-sparse optimizer needs it (`force`): without it every step copies the whole tables and
    # the step time grows with the vocabulary again (python -m benchmarks.speed --vocab_sweep).
    return (0,) if force or self.mesh.devices.flat[0].platform != 'cpu' else ()

  def in_mesh(self, step: Callable) -> Callable:
    """`step` traced with this mesh as the context mesh, so the models see how many `data`
    shards the batch has and route each shard's rows on its own device
    (`scenario_ops.per_shard`)."""
    @functools.wraps(step)
    def traced(*args):
      with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
        return step(*args)
    return traced

  def jit_train_step(self, train_step: Callable, state_shardings,
                     donate_state: bool = False) -> Callable:
    return jax.jit(self.in_mesh(train_step),
                   in_shardings=(state_shardings, self.batch_sharding),
                   out_shardings=(state_shardings, self.replicated),
                   donate_argnums=self._donate(donate_state))

  def jit_predict_step(self, predict_step: Callable, state_shardings) -> Callable:
    return jax.jit(self.in_mesh(predict_step),
                   in_shardings=(state_shardings, self.batch_sharding),
                   out_shardings=self.batch_sharding)

  # -- reporting --------------------------------------------------------------------------------
  def describe(self, params, param_shardings) -> str:
    """Table of the mesh and of each parameter group's spec and per-device shard shape.

    Each sharded parameter is its own group; replicated ones are grouped by top-level module.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    shards = jax.tree_util.tree_leaves(param_shardings)
    groups: dict[str, ParamGroup] = {}
    for (path, x), sharding in zip(flat, shards):
      name = '/'.join(path_names(path))
      spec = sharding.spec
      shard_shape = tuple(sharding.shard_shape(tuple(x.shape)))
      if tuple(spec) and any(a is not None for a in spec):
        groups[name] = ParamGroup(name, 1, int(x.size), tuple(x.shape), spec, shard_shape)
        continue
      if name in self._notes:
        groups[name] = ParamGroup(name, 1, int(x.size), tuple(x.shape), spec, shard_shape,
                                  self._notes[name])
        continue
      top = name.split('/')[0] + ('/*' if '/' in name else '')
      g = groups.setdefault(top, ParamGroup(top, 0, 0, None, spec, None))
      g.count += 1
      g.size += int(x.size)
    lines = [f'mesh {dict(self.mesh.shape)} over {self.mesh.devices.size} {jax.default_backend()}'
             f' devices, {jax.process_count()} process(es); batch: {self.batch_sharding.spec}; '
             f'this process loads data shard {self.data_shard_index} of '
             f'{self.data_shard_count}']
    for g in groups.values():
      if g.shape is not None:
        lines.append(f'  {g.name:40s} {str(g.shape):16s} {str(g.spec):22s} shard '
                     f'{g.shard_shape}' + (f'  ({g.note})' if g.note else ''))
      else:
        lines.append(f'  {g.name:40s} {f"{g.count} arrays, {g.size:,} values":30s} '
                     f'{str(g.spec):8s} replicated (shard = whole array)')
    return '\n'.join(lines)

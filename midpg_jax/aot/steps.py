"""A config's train and predict steps, lowered and compiled for a list of devices that need not
be attached (a TPU topology, a deviceless GPU target, host CPU devices), from the abstract train
state and batch: no parameter is initialised and no data is read."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from midpg_jax.data import load_dataset, synthetic
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.errors import ConfigError, UserError
from midpg_jax.models import build_model, mi_weight
from midpg_jax.partitioning import Partitioner
from midpg_jax.train_state import (create_train_state, make_optimizer, make_predict_step,
                                   make_train_step)

STEPS = ('train', 'predict')


class DoesNotFitError(UserError):
  """The compiled step needs more memory than a device of the target has."""


def feature_spec(config) -> FeatureSpec:
  """The dataset's schema: the built-in data's from its config (nothing generated), a real
  dataset's from its prepared copy (prepared first if needed, as training would)."""
  if config.data.name == 'synthetic':
    return synthetic.feature_spec(config.data)
  return load_dataset(config.data).spec


def abstract_batch(spec: FeatureSpec, rows: int, sharding=None) -> dict:
  """ShapeDtypeStructs of a batch of `rows` as the input pipeline makes it (dtypes of
  midpg_jax/data/store.py)."""
  def array(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  batch = {'cat': array((rows, len(spec.cat_names)), jnp.int32),
           'dense': array((rows, spec.num_dense), jnp.float32),
           'scenario': array((rows,), jnp.int32),
           'label': array((rows,), jnp.float32),
           'weight': array((rows,), jnp.float32)}
  if spec.multi_names:
    batch['multi'] = {name: array((rows, length), jnp.int32)
                      for name, length in zip(spec.multi_names, spec.multi_max_lens)}
  return batch


def _zeros(batch: dict) -> dict:
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch)


@dataclasses.dataclass
class Compiled:
  step: str  # 'train' | 'predict'
  executable: object  # jax.stages.Compiled
  batch_size: int  # global rows per call
  shard_rows: int  # rows per device of the data axis


def compile_steps(config, devices, batch_size: int, predict_batch_size: int | None = None,
                  spec: FeatureSpec | None = None, steps=STEPS,
                  compiler_options: dict | None = None) -> tuple[Partitioner, list[Compiled]]:
  """The train and predict steps of `config` compiled for `devices` on the mesh of
  `config.mesh`, for global batches of `batch_size` (train) and `predict_batch_size` (default:
  the same) rows."""
  partitioner = Partitioner.from_config(config, devices=devices)
  spec = spec or feature_spec(config)
  sizes = {'train': int(batch_size), 'predict': int(predict_batch_size or batch_size)}
  for step in steps:
    if sizes[step] <= 0 or sizes[step] % partitioner.data_size:
      raise ConfigError(f'the {step} batch of {sizes[step]} rows does not divide by the '
                        f'{partitioner.data_size} devices of the mesh data axis (mesh '
                        f'{dict(partitioner.mesh.shape)})')
  model = build_model(config.model, spec)
  tx = make_optimizer(config.train, total_steps=1)
  sample = _zeros(abstract_batch(spec, 2))
  shapes = jax.eval_shape(lambda: create_train_state(model, tx, sample, jax.random.key(0)))
  shardings = partitioner.state_shardings(shapes)
  state = partitioner.abstract_state(shapes, shardings)
  out = []
  for step in steps:
    batch = abstract_batch(spec, sizes[step], partitioner.batch_sharding)
    if step == 'train':
      jitted = partitioner.jit_train_step(make_train_step(model, tx, mi_weight(config.model)),
                                          shardings)
    else:
      jitted = partitioner.jit_predict_step(make_predict_step(model), shardings)
    try:
      executable = jitted.lower(state, batch).compile(compiler_options)
    except jax.errors.JaxRuntimeError as e:
      if 'RESOURCE_EXHAUSTED' not in str(e):
        raise
      # libtpu refuses a program whose buffers exceed the chip's HBM: the answer, not a crash.
      raise DoesNotFitError(f'the {step} step does not fit the target\'s memory: '
                            f'{str(e).split("RESOURCE_EXHAUSTED:")[-1].strip()}') from None
    out.append(Compiled(step, executable, sizes[step], sizes[step] // partitioner.data_size))
  return partitioner, out

"""JAX contenders: a model's jitted train and predict steps on staged batches.

Each contender builds once (`build`: model, optimizer, state; parameters shared by contenders of
the same model shape), then per batch size `stage(batches)`, `warmup()`, and `train(k)` /
`predict(k)`: k steps, synced. Mixed precision: a contender's dtype goes to the model as
`model.dtype` (bf16 compute, float32 master weights and loss; midpg_jax/models/precision.py).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import build_model, mi_weight
from midpg_jax.train_state import (TrainState, init_variables, make_optimizer, make_predict_step,
                                   make_train_step, model_inputs)

N_BATCHES = 3  # distinct batches cycled through per contender and batch size
DTYPES = {'f32': 'float32', 'bf16': 'bfloat16'}  # the command's names -> model.dtype values
_VARIABLES: dict = {}  # (model name, vocab sizes) -> initial variables, for same-shape contenders


def make_data(config, batch_size: int, vocab0: int | None = None):
  """The config's synthetic data with just enough rows for N_BATCHES batches."""
  c = config.data.copy_and_resolve_references()
  c.num_train, c.num_val, c.num_test = batch_size * N_BATCHES, 256, 256
  if vocab0:
    c.vocab_sizes = (int(vocab0),) + tuple(c.vocab_sizes[1:])
  ds = load_dataset(c)
  host = list(pipeline.train_batches(ds.splits['train'], batch_size, 0, 0))
  return ds, [model_inputs(b) for b in host]


def forget_initial_variables() -> None:
  """Drop the cached initial parameters (e.g. the tables of one vocabulary size)."""
  _VARIABLES.clear()


class JaxContender:
  framework = 'jax'

  def __init__(self, name, config, model_overrides=None, train_overrides=None, dtype='f32',
               donate=None, label=None):
    self.name, self.label = name, label or name
    self.config = config.copy_and_resolve_references()
    self.config.model.update(model_overrides or {})
    self.config.train.update(train_overrides or {})
    self.dtype = dtype
    # bf16 through the model's own compute dtype (float32 master weights, float32 loss).
    self.config.model.dtype = DTYPES[dtype]
    # The trainer's policy (partitioning.py): donate the state on accelerators, not on CPU.
    self.donate = (jax.default_backend() != 'cpu') if donate is None else donate
    self.state = self.model = self.batches = self._compiled = None

  def mi_weight(self) -> float:
    return mi_weight(self.config.model)

  def build(self, spec, sample_batch):
    self.model = build_model(self.config.model, spec)
    self.tx = make_optimizer(self.config.train, 1_000_000)
    t0 = time.perf_counter()
    key = (self.config.model.name, spec.cat_vocab_sizes, spec.multi_vocab_sizes)
    if key not in _VARIABLES:  # Flax init once per model shape (its compilation is slow on CPU)
      init = jax.jit(lambda k: init_variables(self.model, sample_batch, k))
      _VARIABLES[key] = dict(init(jax.random.key(0)))
    variables = dict(_VARIABLES[key])
    params = variables.pop('params')
    if self.donate:  # a donated state must own its buffers
      params, variables = jax.tree_util.tree_map(jnp.copy, (params, variables))
    self.state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                            opt_state=self.tx.init(params), rng=jax.random.key(1))
    jax.block_until_ready(self.state)
    self.init_s = time.perf_counter() - t0
    model = self.model
    self.train_step = jax.jit(make_train_step(model, self.tx, self.mi_weight()),
                              donate_argnums=(0,) if self.donate else ())
    self.predict_step = jax.jit(make_predict_step(model))
    return self

  def stage(self, host_batches):
    self.batches = [jax.device_put(b) for b in host_batches]
    self.i = 0
    self._compiled = None  # per batch shape

  def compiled_train_step(self):
    """The train step compiled ahead of time for the staged batch shape, once: the steps, XLA's
    cost and memory analyses and the profile all use this one executable."""
    if self._compiled is None:
      self._compiled = self.train_step.lower(self.state, self.batches[0]).compile()
    return self._compiled

  def warmup(self):
    t0 = time.perf_counter()
    self.compiled_train_step()
    self.train(2)
    self.predict(2)
    return time.perf_counter() - t0

  def train(self, k):
    state, metrics, step = self.state, None, self.compiled_train_step()
    for _ in range(k):
      state, metrics = step(state, self.batches[self.i % len(self.batches)])
      self.i += 1
    jax.block_until_ready((state, metrics))
    self.state = state

  def predict(self, k):
    out = None
    for j in range(k):
      out = self.predict_step(self.state, self.batches[j % len(self.batches)])
    jax.block_until_ready(out)

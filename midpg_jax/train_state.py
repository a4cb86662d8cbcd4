"""The train state as one pytree, the optimizer, and the pure train / predict steps.

`train_step(state, batch) -> (state, metrics)` and `predict_step(state, batch) -> probs` are pure
functions of pytrees, jitted once by the trainer (and later sharded by the partitioner).

`train.sparse_embeddings=True` makes `make_optimizer` return a `sparse_optim.RowSparseOptimizer`:
large embedding tables are then updated only on the rows of the batch (lazy Adam; see
`midpg_jax/sparse_optim.py`), and `make_train_step` builds the matching step. The state stays one
pytree and the step stays pure.

`train.embedding_l2 = λ` adds  λ / B · Σ_tables Σ_{distinct ids of the batch} ||row||²  to the
loss: an L2 penalty on the embedding rows the batch gathered, each counted once per batch however
often it occurs ("mini-batch aware" regularisation, as in DIN), so a rare id is pulled towards 0
as often as it is trained and cannot memorise its few labels. The rows never gathered are not
touched (a whole-table L2 would cost O(vocab) per step and decay ids the data never shows). The
optimizer carries λ (like its weight decay), so every step path (dense and row-sparse) applies it
the same way.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from midpg_jax import objective, sparse_optim
from midpg_jax.errors import ConfigError
from midpg_jax.models.layers import EMBED_PREFIX
from midpg_jax.models.scenario_ops import data_shards

_FEATURES = 'features'  # the FeatureEmbedding module name every model uses

# Columns a model consumes; everything else in a batch (e.g. the synthetic `prob`) stays on host.
MODEL_INPUTS = ('cat', 'dense', 'scenario', 'label', 'weight', 'multi')


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any  # non-trained variables (e.g. per-scenario normalisation statistics)
  opt_state: Any
  rng: jax.Array


def model_inputs(batch: dict) -> dict:
  return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


class Optimizer(NamedTuple):
  """An optax transformation (`init`, `update`) plus the batch-row L2 the train step adds."""

  init: Callable
  update: Callable
  embedding_l2: float = 0.0


SCHEDULES = ('constant', 'cosine', 'linear')
OPTIMIZERS = ('adam', 'adagrad', 'sgd')


def schedule_shape(train_cfg, total_steps: int) -> optax.Schedule:
  """The learning rate's shape over the steps, peak 1: warm-up (linear from 0, if
  `warmup_steps`), then constant, cosine or linear decay to 0."""
  warmup = int(train_cfg.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  if train_cfg.schedule == 'constant':
    after = optax.constant_schedule(1.0)
  elif train_cfg.schedule == 'cosine':
    after = optax.cosine_decay_schedule(1.0, decay_steps)
  elif train_cfg.schedule == 'linear':
    after = optax.linear_schedule(1.0, 0.0, decay_steps)
  else:
    raise ConfigError(f'unknown train.schedule {train_cfg.schedule!r}; choose one of {SCHEDULES}')
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, 1.0, warmup), after], [warmup])


def _peak_learning_rate(train_cfg) -> float:
  lr = float(train_cfg.learning_rate)
  if lr <= 0:
    raise ConfigError(f'train.learning_rate must be positive, got {lr}')
  return lr


def learning_rate_schedule(train_cfg, total_steps: int) -> optax.Schedule:
  """The learning rate at each step: `train.learning_rate` x `schedule_shape`."""
  lr = _peak_learning_rate(train_cfg)
  shape = schedule_shape(train_cfg, total_steps)
  return lambda count: lr * shape(count)


def make_optimizer(train_cfg, total_steps: int) -> Optimizer | sparse_optim.RowSparseOptimizer:
  """The optimizer of `train_cfg`, its peak learning rate and weight decay held in its state.

  `optax.inject_hyperparams` keeps `learning_rate` and `weight_decay` as arrays of the optimizer
  state, and the schedule's shape (peak 1) scales the update after them, so the same compiled train
  step serves every learning rate and weight decay: the grid points of a comparison read one
  program back from the compilation cache instead of compiling their own. The update equals
  optax.adamw(learning_rate_schedule, weight_decay) (AdamW's decay is multiplied by the
  scheduled rate either way); weight_decay 0 is plain Adam.
  """
  lr = _peak_learning_rate(train_cfg)
  shape = schedule_shape(train_cfg, total_steps)
  embedding_l2 = float(train_cfg.get('embedding_l2', 0.0))
  if embedding_l2 < 0:
    raise ConfigError(f'train.embedding_l2 must be >= 0, got {embedding_l2}')
  wd = float(train_cfg.weight_decay)
  if wd < 0:
    raise ConfigError(f'train.weight_decay must be >= 0, got {wd}')
  if train_cfg.optimizer == 'adam':
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=lr, weight_decay=wd)
  elif train_cfg.optimizer == 'adagrad':
    tx = optax.inject_hyperparams(optax.adagrad)(learning_rate=lr)
  elif train_cfg.optimizer == 'sgd':
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.9)
  else:
    raise ConfigError(f'unknown train.optimizer {train_cfg.optimizer!r}; choose one of '
                      f'{OPTIMIZERS}')
  tx = optax.chain(tx, optax.scale_by_schedule(shape))
  if train_cfg.get('sparse_embeddings', False):
    # Clipping is applied by the sparse step over both parts (the global norm stays exact).
    return sparse_optim.make_row_sparse(train_cfg, learning_rate_schedule(train_cfg, total_steps),
                                        tx)._replace(embedding_l2=embedding_l2)
  if train_cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(float(train_cfg.grad_clip_norm)), tx)
  return Optimizer(tx.init, tx.update, embedding_l2)


def with_hyperparams_of(opt_state: Any, fresh_opt_state: Any) -> Any:
  """`opt_state` (restored from a checkpoint) with the hyper-parameters (`inject_hyperparams`'
  learning rate, weight decay, ...) of `fresh_opt_state` (initialised from the current config):
  the config, not the checkpoint, says what the rate is when a run is resumed."""
  has_hyper = lambda node: hasattr(node, 'hyperparams')  # noqa: E731

  def take(restored, fresh):
    return restored._replace(hyperparams=fresh.hyperparams) if has_hyper(restored) else restored

  return jax.tree_util.tree_map(take, opt_state, fresh_opt_state, is_leaf=has_hyper)


def batch_rows_l2(params, batch: dict, spec) -> jax.Array:
  """Σ over embedding tables of Σ_{distinct ids in the batch} ||row||², divided by the batch size.

  Each gathered row is weighted by 1 / (its count in the batch), which counts it once without a
  `jnp.unique`; a multi-valued field's padding id 0 is left out. O(B·F·E + vocab) per step.
  """
  feats = params[_FEATURES]
  columns = [(EMBED_PREFIX + n, batch['cat'][:, j], False) for j, n in enumerate(spec.cat_names)]
  columns += [(EMBED_PREFIX + n, batch['multi'][n], True) for n in spec.multi_names]
  total = jnp.zeros((), jnp.float32)
  for name, ids, padded in columns:
    # With the rows split over data shards, a barrier keeps XLA from merging this lookup (ids in
    # batch order) with the model's own (ids in its routed order) into one gather of concatenated
    # ids: that concatenation of two differently sharded row sets made libtpu's partitioner
    # all-gather the ids (v5e:2x2, 75 all-gathers of the batch's 16,384 ids per step). On one
    # shard there is nothing to partition, and the merged gather is the cheaper program.
    table = feats[name]  # (V, E)
    if data_shards() > 1:
      table = jax.lax.optimization_barrier(table)
    ids = ids.reshape(-1)
    real = (ids > 0) if padded else jnp.ones(ids.shape, bool)
    counts = jnp.zeros((table.shape[0],), jnp.float32).at[ids].add(real.astype(jnp.float32))
    weight = jnp.where(real, 1.0 / jnp.maximum(counts[ids], 1.0), 0.0)  # (n_ids,)
    total = total + jnp.sum(weight * jnp.sum(jnp.square(jnp.take(table, ids, axis=0)), axis=-1))
  return total / batch['cat'].shape[0]


def regularised_loss_fn(embedding_l2: float, spec) -> Callable:
  """objective.loss_fn plus the batch-row L2 of `params` (the same function for both steps)."""

  def loss_fn(outputs, batch, mi_weight, params=None):
    loss, parts = objective.loss_fn(outputs, batch, mi_weight)
    if embedding_l2:
      penalty = batch_rows_l2(params, batch, spec)
      loss = loss + embedding_l2 * penalty
      parts = {**parts, 'embedding_l2': penalty}
    return loss, parts

  return loss_fn


def init_variables(model: nn.Module, sample_batch: dict, rng: jax.Array) -> dict:
  params_rng, dropout_rng = jax.random.split(rng)
  return model.init({'params': params_rng, 'dropout': dropout_rng}, model_inputs(sample_batch),
                    train=False)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, sample_batch: dict,
                       rng: jax.Array) -> TrainState:
  init_rng, state_rng = jax.random.split(rng)
  variables = dict(init_variables(model, sample_batch, init_rng))
  params = variables.pop('params')
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params), rng=state_rng)


def count_params(params) -> int:
  return int(optax.tree.size(params))


def _apply(model, state_params, model_state, batch, train, rngs=None):
  variables = {'params': state_params, **model_state}
  mutable = list(model_state.keys()) if train and model_state else False
  result = model.apply(variables, batch, train=train, mutable=mutable, rngs=rngs)
  return result if mutable else (result, model_state)


def make_train_step(model: nn.Module, tx, mi_weight: float) -> Callable:
  embedding_l2 = float(getattr(tx, 'embedding_l2', 0.0))
  if embedding_l2 and getattr(model, 'spec', None) is None:
    raise ConfigError(f'train.embedding_l2 needs a model with a `spec` field; '
                      f'{type(model).__name__} has none')
  loss_fn = regularised_loss_fn(embedding_l2, getattr(model, 'spec', None))
  if isinstance(tx, sparse_optim.RowSparseOptimizer):
    return sparse_optim.make_sparse_train_step(model, tx, mi_weight, _apply, loss_fn)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng, dropout_rng = jax.random.split(state.rng)

    def loss_of(params):
      outputs, new_model_state = _apply(model, params, state.model_state, batch, True,
                                        {'dropout': dropout_rng})
      loss, parts = loss_fn(outputs, batch, mi_weight, params)
      return loss, (parts, new_model_state)

    (loss, (parts, new_model_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=new_model_state, rng=rng)
    return new_state, {'loss': loss, **parts}

  return train_step


def make_predict_step(model: nn.Module) -> Callable:
  def predict_step(state: TrainState, batch: dict) -> jax.Array:
    outputs, _ = _apply(model, state.params, state.model_state, batch, False)
    return jax.nn.sigmoid(outputs['logits'])  # (B,)

  return predict_step

"""The train state as one pytree, the optimizer, and the pure train / predict steps.

`train_step(state, batch) -> (state, metrics)` and `predict_step(state, batch) -> probs` are pure
functions of pytrees, jitted once by the trainer (and later sharded by the partitioner).

`train.sparse_embeddings=True` makes `make_optimizer` return a `sparse_optim.RowSparseOptimizer`:
large embedding tables are then updated only on the rows of the batch (lazy Adam; see
`midpg_jax/sparse_optim.py`), and `make_train_step` builds the matching step. The state stays one
pytree and the step stays pure.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from midpg_jax import objective, sparse_optim

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


def make_optimizer(train_cfg, total_steps: int
                   ) -> optax.GradientTransformation | sparse_optim.RowSparseOptimizer:
  lr = float(train_cfg.learning_rate)
  if lr <= 0:
    raise ValueError(f'train.learning_rate must be positive, got {lr}')
  warmup = int(train_cfg.warmup_steps)
  if train_cfg.schedule == 'constant':
    schedule = optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
    if warmup:
      schedule = optax.join_schedules([schedule, optax.constant_schedule(lr)], [warmup])
  elif train_cfg.schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup,
                                                  max(total_steps, warmup + 1))
  else:
    raise ValueError(f"unknown train.schedule {train_cfg.schedule!r}; choose 'constant' or "
                     "'cosine'")
  wd = float(train_cfg.weight_decay)
  if train_cfg.optimizer == 'adam':
    tx = optax.adamw(schedule, weight_decay=wd) if wd else optax.adam(schedule)
  elif train_cfg.optimizer == 'adagrad':
    tx = optax.adagrad(schedule)
  elif train_cfg.optimizer == 'sgd':
    tx = optax.sgd(schedule, momentum=0.9)
  else:
    raise ValueError(f"unknown train.optimizer {train_cfg.optimizer!r}; choose 'adam', "
                     "'adagrad' or 'sgd'")
  if train_cfg.get('sparse_embeddings', False):
    # Clipping is applied by the sparse step over both parts (the global norm stays exact).
    return sparse_optim.make_row_sparse(train_cfg, schedule, tx)
  if train_cfg.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(float(train_cfg.grad_clip_norm)), tx)
  return tx


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
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def _apply(model, state_params, model_state, batch, train, rngs=None):
  variables = {'params': state_params, **model_state}
  mutable = list(model_state.keys()) if train and model_state else False
  result = model.apply(variables, batch, train=train, mutable=mutable, rngs=rngs)
  return result if mutable else (result, model_state)


def make_train_step(model: nn.Module, tx, mi_weight: float) -> Callable:
  if isinstance(tx, sparse_optim.RowSparseOptimizer):
    return sparse_optim.make_sparse_train_step(model, tx, mi_weight, _apply, objective.loss_fn)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng, dropout_rng = jax.random.split(state.rng)

    def loss_of(params):
      outputs, new_model_state = _apply(model, params, state.model_state, batch, True,
                                        {'dropout': dropout_rng})
      loss, parts = objective.loss_fn(outputs, batch, mi_weight)
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

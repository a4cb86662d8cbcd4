"""Row-sparse (lazy) optimisation of large embedding tables: `train.sparse_embeddings=True`.

The gradient of a gather is dense in JAX: d loss / d table is a (vocab, E) array that is zero
except on the rows the batch used, and a dense optimizer reads and writes the whole table and its
moments every step, so the step time grows with the vocabulary. The row-sparse path instead

1. takes, per large table, the unique ids of the batch: `jnp.unique(ids, size=U,
   fill_value=vocab)` with U = min(ids in the batch, vocab) (static shapes; the padding slots hold
   the out-of-range id `vocab`);
2. gathers those rows (U, E) and runs the model on them: a clone of the model whose `spec` has
   vocabulary U for those fields, with the rows in place of the tables and the batch's ids
   replaced by their positions in the unique list (the inverse indices). The model computes
   exactly what it computes on the full tables (the same rows are looked up), and its gradient
   w.r.t. the rows is the dense gradient's non-zero rows, summed over duplicate ids;
3. updates only those rows, their moments and nothing else, with `.at[rows].set(mode='drop')`
   (the padding slots are dropped); every other parameter goes through the usual optax optimizer.

Optimizer semantics on the sparse tables (`train.optimizer`):
* 'adam': LazyAdam, the standard approximation (TF Addons LazyAdam, `torch.optim.SparseAdam`):
  the moments of a row are decayed and updated only on steps where the row is in the batch, and
  the bias correction uses the *global* step count. Dense Adam also decays the moments of absent
  rows (and moves them by their remaining momentum), so the two differ after the first step for
  rows that skip steps; on the first step they are equal. `weight_decay` (AdamW) decays the
  present rows only.
* 'adagrad': exact. Absent rows have zero gradient, which leaves both their accumulator and
  their value unchanged in dense Adagrad too.
* 'sgd' (momentum 0.9): lazy momentum (absent rows keep their velocity without moving).
* `grad_clip_norm`: exact; the global norm over the row gradients equals the dense one.

The train state stays one pytree: `opt_state = {'dense': <optax state of the other params>,
'rows': {'mu': {...tables}, 'nu': {...tables}}, 'count': int32}` (the slot trees mirror the
params' paths, so sharding rules that follow the parameters apply to them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from midpg_jax.errors import ConfigError
from midpg_jax.models.layers import EMBED_PREFIX

OPTIMIZERS = ('adam', 'adagrad', 'sgd')
# Tables with fewer rows stay dense: their whole-table update costs no more than the row path.
MIN_ROWS = 4096
_FEATURES = 'features'  # the FeatureEmbedding module name every model uses


class RowSparseOptimizer(NamedTuple):
  """An optimizer whose large embedding tables are updated row-sparsely (see module doc).

  `init(params)` is like an optax transformation's; the update happens in the train step
  (`make_sparse_train_step`), which needs the batch's ids.
  """

  dense: optax.GradientTransformation  # every parameter but the sparse tables (no clipping)
  schedule: Callable[[jax.Array], jax.Array]
  kind: str  # 'adam' | 'adagrad' | 'sgd'
  weight_decay: float = 0.0
  embedding_l2: float = 0.0  # read by train_state.make_train_step (the batch-row L2 of the loss)
  clip_norm: float = 0.0
  min_rows: int = MIN_ROWS
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  adagrad_init: float = 0.1
  adagrad_eps: float = 1e-7
  momentum: float = 0.9

  def sparse_names(self, params) -> tuple[str, ...]:
    """Names `embed_<field>` of the tables updated row-sparsely."""
    feats = params.get(_FEATURES, {}) if hasattr(params, 'get') else {}
    return tuple(sorted(k for k, v in feats.items()
                        if k.startswith(EMBED_PREFIX) and v.ndim == 2 and v.shape[0] >= self.min_rows))

  def split(self, params) -> tuple[Any, dict]:
    """(params without the sparse tables, {name: table})."""
    names = self.sparse_names(params)
    params = flax.core.unfreeze(params) if isinstance(params, flax.core.FrozenDict) else params
    feats = dict(params[_FEATURES]) if names else None
    tables = {n: feats.pop(n) for n in names}
    dense = {**params, _FEATURES: feats} if names else params
    return dense, tables

  def init(self, params) -> dict:
    dense, tables = self.split(params)
    zeros = lambda: {_FEATURES: {n: jnp.zeros_like(t) for n, t in tables.items()}}
    if self.kind == 'adam':
      slots = {'mu': zeros(), 'nu': zeros()}
    elif self.kind == 'adagrad':
      slots = {'sum_of_squares': {_FEATURES: {
          n: jnp.full_like(t, self.adagrad_init) for n, t in tables.items()}}}
    else:
      slots = {'trace': zeros()}
    return {'dense': self.dense.init(dense), 'rows': slots, 'count': jnp.zeros((), jnp.int32)}


def make_row_sparse(train_cfg, schedule, dense_tx: optax.GradientTransformation,
                    min_rows: int = MIN_ROWS) -> RowSparseOptimizer:
  kind = train_cfg.optimizer
  if kind not in OPTIMIZERS:
    raise ConfigError(f'train.sparse_embeddings supports train.optimizer in {OPTIMIZERS}, '
                     f'got {kind!r}')
  return RowSparseOptimizer(dense=dense_tx, schedule=schedule, kind=kind,
                            weight_decay=float(train_cfg.weight_decay),
                            clip_norm=float(train_cfg.grad_clip_norm or 0.0), min_rows=min_rows)


# ---- the batch side: unique ids per table ----------------------------------------------------

class TableRows(NamedTuple):
  rows: jax.Array  # (U,) unique ids, padded with `vocab` (out of range)
  inverse: jax.Array  # ids' positions in `rows`, shaped like the ids


def unique_rows(ids: jax.Array, vocab: int, keep_zero: bool = False) -> TableRows:
  """Unique ids of a batch column (static size U = min(#ids, vocab), padded with `vocab`).

  keep_zero: multi-valued fields use id 0 as padding and the model masks `ids > 0`; id 0 is then
  forced to be the first unique row, so the remapped padding stays 0 and real ids stay > 0.
  """
  flat = ids.reshape(-1).astype(jnp.int32)
  if keep_zero:
    flat = jnp.concatenate([jnp.zeros((1,), jnp.int32), flat])
  size = min(flat.shape[0], vocab)
  rows, inverse = jnp.unique(flat, size=size, fill_value=vocab, return_inverse=True)
  inverse = inverse.reshape(-1)
  if keep_zero:
    inverse = inverse[1:]
  return TableRows(rows.astype(jnp.int32), inverse.reshape(ids.shape).astype(jnp.int32))


def _field_ids(spec, batch) -> dict[str, tuple[jax.Array, bool]]:
  out = {}
  for j, name in enumerate(spec.cat_names):
    out[EMBED_PREFIX + name] = (batch['cat'][:, j], False)
  for name in spec.multi_names:
    out[EMBED_PREFIX + name] = (batch['multi'][name], True)
  return out


def remap(model, batch: dict, tables: dict) -> tuple[Any, dict, dict[str, TableRows]]:
  """(model over the gathered rows, batch with remapped ids, {name: TableRows})."""
  spec = getattr(model, 'spec', None)
  if spec is None:
    raise ConfigError(f'train.sparse_embeddings needs a model with a `spec` field; '
                     f'{type(model).__name__} has none')
  ids = _field_ids(spec, batch)
  unknown = set(tables) - set(ids)
  if unknown:
    raise ConfigError(f'embedding tables {sorted(unknown)} match no field of the feature spec')
  found = {n: unique_rows(ids[n][0], tables[n].shape[0], ids[n][1]) for n in tables}
  size = {n: r.rows.shape[0] for n, r in found.items()}
  new_spec = dataclasses.replace(
      spec,
      cat_vocab_sizes=tuple(size.get(EMBED_PREFIX + n, v)
                            for n, v in zip(spec.cat_names, spec.cat_vocab_sizes)),
      multi_vocab_sizes=tuple(size.get(EMBED_PREFIX + n, v)
                              for n, v in zip(spec.multi_names, spec.multi_vocab_sizes)))
  new_batch = dict(batch)
  cols = [found[EMBED_PREFIX + n].inverse if EMBED_PREFIX + n in found else batch['cat'][:, j]
          for j, n in enumerate(spec.cat_names)]
  if cols:
    new_batch['cat'] = jnp.stack(cols, axis=1).astype(batch['cat'].dtype)
  if spec.multi_names:
    new_batch['multi'] = {n: (found[EMBED_PREFIX + n].inverse.astype(v.dtype)
                              if EMBED_PREFIX + n in found else v)
                          for n, v in batch['multi'].items()}
  return model.clone(spec=new_spec), new_batch, found


def gather_rows(table: jax.Array, rows: jax.Array) -> jax.Array:
  return table.at[rows].get(mode='fill', fill_value=0)


# ---- the update ------------------------------------------------------------------------------

def global_norm(dense_grads, row_grads: dict) -> jax.Array:
  """The dense gradient's global norm (row gradients are its only non-zero rows)."""
  return optax.tree.norm((dense_grads, row_grads))


def sparse_update(opt: RowSparseOptimizer, tables: dict, slots: dict, found: dict,
                  row_grads: dict, count: jax.Array) -> tuple[dict, dict]:
  """New tables and slots: only the rows in `found` change (LazyAdam / Adagrad / lazy SGD)."""
  lr = opt.schedule(count)
  t = (count + 1).astype(jnp.float32)
  new_tables = {}
  new_slots = jax.tree_util.tree_map(lambda x: x, slots)  # shallow copy of the nesting
  for name, table in tables.items():
    rows, g = found[name].rows, row_grads[name]
    p = gather_rows(table, rows)
    get = lambda slot: gather_rows(slots[slot][_FEATURES][name], rows)
    put = lambda slot, value: slots[slot][_FEATURES][name].at[rows].set(value, mode='drop')
    if opt.kind == 'adam':
      mu = opt.b1 * get('mu') + (1 - opt.b1) * g
      nu = opt.b2 * get('nu') + (1 - opt.b2) * g * g
      mu_hat = mu / (1 - opt.b1 ** t)
      nu_hat = nu / (1 - opt.b2 ** t)
      step = mu_hat / (jnp.sqrt(nu_hat) + opt.eps)
      if opt.weight_decay:
        step = step + opt.weight_decay * p
      new_slots['mu'][_FEATURES][name] = put('mu', mu)
      new_slots['nu'][_FEATURES][name] = put('nu', nu)
    elif opt.kind == 'adagrad':
      acc = get('sum_of_squares') + g * g
      step = jnp.where(acc > 0, jax.lax.rsqrt(acc + opt.adagrad_eps), 0.0) * g
      new_slots['sum_of_squares'][_FEATURES][name] = put('sum_of_squares', acc)
    else:  # sgd with momentum (optax.trace, nesterov=False)
      trace = g + opt.momentum * get('trace')
      step = trace
      new_slots['trace'][_FEATURES][name] = put('trace', trace)
    new_tables[name] = table.at[rows].set(p - lr * step, mode='drop')
  return new_tables, new_slots


def make_sparse_train_step(model, opt: RowSparseOptimizer, mi_weight: float,
                           apply_fn: Callable, loss_fn: Callable) -> Callable:
  """train_step(state, batch) -> (state, metrics) with the row-sparse tables.

  apply_fn(model, params, model_state, batch, train, rngs) -> (outputs, new_model_state) and
  loss_fn(outputs, batch, mi_weight, params) -> (loss, parts) are train_state's, passed in to keep this
  module free of a circular import.
  """

  def train_step(state, batch):
    rng, dropout_rng = jax.random.split(state.rng)
    dense_params, tables = opt.split(state.params)
    sub_model, sub_batch, found = remap(model, batch, tables)
    rows = {n: gather_rows(t, found[n].rows) for n, t in tables.items()}

    def loss_of(dense_params, rows):
      params = {**dense_params, _FEATURES: {**dense_params[_FEATURES], **rows}}
      outputs, new_model_state = apply_fn(sub_model, params, state.model_state, sub_batch, True,
                                          {'dropout': dropout_rng})
      # The sub-batch's ids index the gathered rows, so a regulariser on the batch's rows
      # (train.embedding_l2) sees exactly the rows the dense step would.
      loss, parts = loss_fn(outputs, sub_batch, mi_weight, params)
      return loss, (parts, new_model_state)

    (loss, (parts, new_model_state)), (dense_grads, row_grads) = jax.value_and_grad(
        loss_of, argnums=(0, 1), has_aux=True)(dense_params, rows)
    if opt.clip_norm:
      norm = global_norm(dense_grads, row_grads)
      scale = jnp.where(norm < opt.clip_norm, 1.0, opt.clip_norm / norm)  # optax's rule
      dense_grads, row_grads = optax.tree.scale(scale, (dense_grads, row_grads))
    opt_state = state.opt_state
    updates, dense_opt_state = opt.dense.update(dense_grads, opt_state['dense'], dense_params)
    dense_params = optax.apply_updates(dense_params, updates)
    new_tables, new_slots = sparse_update(opt, tables, opt_state['rows'], found, row_grads,
                                          opt_state['count'])
    params = {**dense_params, _FEATURES: {**dense_params[_FEATURES], **new_tables}}
    new_opt_state = {'dense': dense_opt_state, 'rows': new_slots,
                     'count': opt_state['count'] + 1}
    new_state = state.replace(step=state.step + 1, params=params, opt_state=new_opt_state,
                              model_state=new_model_state, rng=rng)
    return new_state, {'loss': loss, **parts}

  return train_step

"""Mixed precision (`model.dtype`, `model.param_dtype`): the backbone computes in bfloat16 while the
parameters (the optimiser's master copy), the logits, the loss and the MI term stay float32, and
bfloat16 training reaches the float32 validation AUC within 0.01 on the built-in synthetic data."""

import collections

import jax
import jax.extend
import numpy as np
import pytest

from conftest import small_config
from midpg_jax import metrics
from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import build_model, mi_weight
from midpg_jax.train_state import (create_train_state, make_optimizer, make_train_step,
                                   model_inputs)

pytestmark = pytest.mark.slow  # each test trains a run or starts processes

AUC_TOLERANCE = 0.01
_FAST = {'xla_backend_optimization_level': 0}


def _config(name, dtype):
  c = small_config(num_train=16_000, num_val=8_000, num_test=1_000, heterogeneity=1.0,
                   base_rates=(0.2, 0.3, 0.1, 0.25))
  c.model.name, c.model.dtype = name, dtype
  c.model.hidden, c.model.embed_dim, c.model.star_aux_hidden = (32, 16), 8, (8,)
  c.train.batch_size = 256
  return c


@pytest.fixture(scope='module')
def data():
  c = _config('midpg', 'float32')
  ds = load_dataset(c.data)
  batches = [model_inputs(b) for epoch in range(2)
             for b in pipeline.train_batches(ds.splits['train'], 256, c.seed, epoch)]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)  # (steps, B, ...)
  n_val = len(ds.splits['validation']['label'])
  val = model_inputs(next(pipeline.eval_batches(ds.splits['validation'], n_val)))
  return ds, stacked, val


def _fit(name, dtype, ds, stacked, val):
  c = _config(name, dtype)
  model = build_model(c.model, ds.spec)
  tx = make_optimizer(c.train, len(stacked['label']))

  def run(stacked, val, key):
    state = create_train_state(model, tx, jax.tree.map(lambda a: a[0], stacked), key)
    state, step_metrics = jax.lax.scan(make_train_step(model, tx, mi_weight(c.model)),
                                       state, stacked)
    out = model.apply({'params': state.params, **state.model_state}, val)
    return state, step_metrics['loss'], out['logits']

  key = jax.random.key(0)
  state, losses, logits = jax.jit(run).lower(stacked, val, key).compile(_FAST)(stacked, val, key)
  assert np.isfinite(np.asarray(losses)).all()
  return model, state, losses, logits, metrics.auc(ds.splits['validation']['label'],
                                                   np.asarray(logits))


def _dot_operand_dtypes(model, variables, batch):
  """Counter of the operand dtypes of every matmul in the training forward and backward pass."""
  state = {k: v for k, v in variables.items() if k != 'params'}

  def loss(params):
    out, _ = model.apply({'params': params, **state}, batch, train=True, mutable=list(state))
    return out['logits'].sum()

  def eqns(jaxpr):
    for e in jaxpr.eqns:
      yield e
      for sub in jax.extend.core.jaxprs_in_params(e.params):
        yield from eqns(sub)

  jaxpr = jax.make_jaxpr(jax.grad(loss))(variables['params']).jaxpr
  return collections.Counter(str(e.invars[0].aval.dtype) for e in eqns(jaxpr)
                             if e.primitive.name == 'dot_general')


@pytest.mark.parametrize('name', ['midpg', 'star'])
def test_bfloat16_training_matches_float32_auc(data, name):
  """MI-DPG (MI term) and STAR (partitioned-norm batch moments): same AUC within 0.01, float32
  master parameters and logits, and the matmuls really run in bfloat16."""
  ds, stacked, val = data
  _, _, _, _, auc32 = _fit(name, 'float32', ds, stacked, val)
  model, state, losses, logits, auc16 = _fit(name, 'bfloat16', ds, stacked, val)
  assert auc32 > 0.6, auc32
  assert abs(auc16 - auc32) <= AUC_TOLERANCE, (name, auc32, auc16)
  assert {str(p.dtype) for p in jax.tree.leaves(state.params)} == {'float32'}
  assert logits.dtype == np.float32 and losses.dtype == np.float32
  first = jax.tree.map(lambda a: a[0, :64], stacked)
  dots = _dot_operand_dtypes(model, {'params': state.params, **state.model_state}, first)
  print(name, 'validation AUC float32', auc32, 'bfloat16', auc16, 'matmul operand dtypes', dots)
  # Forward and backward of every backbone layer at least; MI-DPG's MI sketches stay float32.
  assert dots['bfloat16'] >= 2 * (len(_config(name, 'float32').model.hidden) + 1), dots
  if name == 'star':
    assert dots['float32'] == 0, dots


def test_unknown_dtype_is_a_config_error(data):
  ds = data[0]
  c = _config('mmoe', 'float8')
  with pytest.raises(ValueError, match='unknown model.dtype'):
    build_model(c.model, ds.spec)

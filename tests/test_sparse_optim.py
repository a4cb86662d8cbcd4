"""The row-sparse embedding path (`train.sparse_embeddings`, midpg_jax/sparse_optim.py).

* rows absent from the batch are untouched; present rows follow a numpy LazyAdam reference;
* Adagrad (exactly sparse) and the first Adam step equal the dense optimizer, also with gradient
  clipping and with multi-valued (padded) fields.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from midpg_jax import objective, sparse_optim
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models import build_model
from midpg_jax.train_state import TrainState, init_variables, make_optimizer, make_train_step
from conftest import small_config

MIN_ROWS = 64  # make the small test tables "large"


def _spec():
  return FeatureSpec(cat_names=('a', 'b', 'c'), cat_vocab_sizes=(300, 120, 10),
                     dense_names=('d0',), scenario_names=('s0', 's1', 's2'),
                     multi_names=('m',), multi_vocab_sizes=(200,), multi_max_lens=(4,))


def _batches(spec, n, size=32, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    cat = np.stack([rng.integers(0, v // 3, size) for v in spec.cat_vocab_sizes], 1)  # few ids
    multi = rng.integers(1, 50, (size, 4))
    multi[:, 2:] *= rng.random((size, 2)) < 0.5  # some padding (id 0)
    out.append({'cat': jnp.asarray(cat, jnp.int32), 'dense': jnp.asarray(rng.normal(size=(size, 1)),
                                                                          jnp.float32),
                'multi': {'m': jnp.asarray(multi, jnp.int32)},
                'scenario': jnp.asarray(rng.integers(0, 3, size), jnp.int32),
                'label': jnp.asarray(rng.random(size) < 0.3, jnp.float32),
                'weight': jnp.ones(size, jnp.float32)})
  return out


def _setup(optimizer='adam', name='mlp', sparse=True, clip=0.0, lr=0.05, spec=None):
  c = small_config()
  c.model.name = name
  c.train.optimizer = optimizer
  c.train.learning_rate = lr
  c.train.grad_clip_norm = clip
  c.train.sparse_embeddings = sparse
  spec = spec or _spec()
  model = build_model(c.model, spec)
  tx = make_optimizer(c.train, 100)
  if sparse:
    assert isinstance(tx, sparse_optim.RowSparseOptimizer)
    tx = tx._replace(min_rows=MIN_ROWS)
  return c, spec, model, tx


def _init(model, tx, batch):
  """A train state with random parameters (numpy: compiling Flax's initialisers is slow here)."""
  shapes = jax.eval_shape(lambda k: init_variables(model, batch, k), jax.random.key(0))['params']
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), jnp.float32), shapes)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state={},
                    opt_state=tx.init(params), rng=jax.random.key(0))


def test_unique_rows_keeps_padding_zero_and_inverts():
  ids = jnp.array([[5, 0, 7], [7, 3, 0]])
  found = sparse_optim.unique_rows(ids, vocab=10, keep_zero=True)
  rows, inv = np.asarray(found.rows), np.asarray(found.inverse)
  assert rows[0] == 0 and list(rows[:4]) == [0, 3, 5, 7] and (rows[4:] == 10).all()
  np.testing.assert_array_equal(rows[inv], np.asarray(ids))
  assert ((inv > 0) == (np.asarray(ids) > 0)).all()  # padding stays padding
  cat = sparse_optim.unique_rows(jnp.array([4, 4, 1]), vocab=3)  # U = min(#ids, vocab)
  assert cat.rows.shape == (3,)


def test_lazy_adam_matches_numpy_reference_and_leaves_absent_rows():
  c, spec, model, tx = _setup('adam')
  batches = _batches(spec, 3)
  state = _init(model, tx, batches[0])
  names = tx.sparse_names(state.params)
  assert set(names) == {'embed_a', 'embed_b', 'embed_m'}  # embed_c (10 rows) stays dense
  step = jax.jit(make_train_step(model, tx, 0.0))

  # Reference: the dense gradient of the same loss, LazyAdam in numpy on the batch's rows.
  @jax.jit  # one program for the three batches, not every primitive compiled on its own
  def dense_grad(params, batch):
    return jax.grad(lambda p: objective.loss_fn(model.apply({'params': p}, batch), batch, 0.0)[0])(
        params)

  ref = {n: np.array(state.params['features'][n], np.float64) for n in names}
  mu = {n: np.zeros_like(v) for n, v in ref.items()}
  nu = {n: np.zeros_like(v) for n, v in ref.items()}
  initial = {n: np.array(state.params['features'][n]) for n in names}
  touched = {n: np.zeros(ref[n].shape[0], bool) for n in names}
  b1, b2, eps, lr = 0.9, 0.999, 1e-8, c.train.learning_rate
  for t, batch in enumerate(batches, start=1):
    g = dense_grad(state.params, batch)
    ids = {'embed_a': batch['cat'][:, 0], 'embed_b': batch['cat'][:, 1],
           'embed_m': batch['multi']['m']}
    for n in names:
      rows = np.unique(np.asarray(ids[n]))
      gr = np.asarray(g['features'][n], np.float64)[rows]
      mu[n][rows] = b1 * mu[n][rows] + (1 - b1) * gr
      nu[n][rows] = b2 * nu[n][rows] + (1 - b2) * gr ** 2
      upd = (mu[n][rows] / (1 - b1 ** t)) / (np.sqrt(nu[n][rows] / (1 - b2 ** t)) + eps)
      ref[n][rows] -= lr * upd
      touched[n][rows] = True
    state, _ = step(state, batch)

  for n in names:
    got = np.asarray(state.params['features'][n])
    np.testing.assert_allclose(got, ref[n], rtol=1e-5, atol=1e-6, err_msg=n)
    np.testing.assert_array_equal(got[~touched[n]], initial[n][~touched[n]])  # bit-exact
    np.testing.assert_allclose(state.opt_state['rows']['mu']['features'][n], mu[n], atol=1e-7)
    assert (~touched[n]).any() and touched[n].any()


def _run(optimizer, sparse, steps, clip=0.0, name='mlp', spec=None):
  _, spec, model, tx = _setup(optimizer, name=name, sparse=sparse, clip=clip, spec=spec)
  batches = _batches(spec, steps)
  state = _init(model, tx, batches[0])
  step = jax.jit(make_train_step(model, tx, 0.01))
  losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  return state.params, losses


@pytest.mark.parametrize('optimizer,steps,clip', [('adagrad', 3, 0.05), ('adam', 1, 0.0)])
def test_sparse_equals_dense_where_exact(optimizer, steps, clip):
  """Adagrad is exactly sparse (absent rows: zero gradient, no change); Adam's first step too."""
  dense, dense_losses = _run(optimizer, False, steps, clip)
  sparse, sparse_losses = _run(optimizer, True, steps, clip)
  np.testing.assert_allclose(sparse_losses, dense_losses, rtol=1e-6)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(sparse),
                          jax.tree_util.tree_leaves(dense)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_midpg_sparse_step_runs_and_matches_dense_adagrad():
  """The MI-DPG model (default tiled path, MI term) through the sparse step."""
  spec = FeatureSpec(cat_names=('a', 'b'), cat_vocab_sizes=(300, 90), dense_names=('d0',),
                     scenario_names=('s0', 's1', 's2'))
  dense, dl = _run('adagrad', False, 2, name='midpg', spec=spec)
  sparse, sl = _run('adagrad', True, 2, name='midpg', spec=spec)
  np.testing.assert_allclose(sl, dl, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(sparse), jax.tree_util.tree_leaves(dense)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_state_is_one_pytree_and_bad_optimizer_is_named():
  c, spec, model, tx = _setup('adam')
  state = _init(model, tx, _batches(spec, 1)[0])
  assert isinstance(state, TrainState)
  leaves = jax.tree_util.tree_leaves(state)
  assert all(isinstance(x, jax.Array) for x in leaves)
  assert state.opt_state['rows']['nu']['features']['embed_a'].shape == (300, c.model.embed_dim)
  c.train.optimizer = 'lion'
  with pytest.raises(ValueError, match='optimizer'):
    make_optimizer(c.train, 10)

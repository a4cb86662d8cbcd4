"""Against overfitting the ids (issue 9 point 4): the batch-row embedding L2 (dense and row-sparse
steps alike), the linear learning-rate decay, and the synthetic data's frequency threshold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from midpg_jax import train_state
from midpg_jax.data import synthetic
from midpg_jax.errors import ConfigError
from test_sparse_optim import _batches, _init, _setup, _spec
from conftest import small_config


def test_batch_rows_l2_counts_each_distinct_row_once():
  spec = _spec()
  batch = _batches(spec, 1)[0]
  rng = np.random.default_rng(1)
  tables = {f'embed_{n}': jnp.asarray(rng.normal(size=(v, 4)), jnp.float32)
            for n, v in zip((*spec.cat_names, *spec.multi_names),
                            (*spec.cat_vocab_sizes, *spec.multi_vocab_sizes))}
  got = train_state.batch_rows_l2({'features': tables}, batch, spec)
  want = 0.0
  for j, n in enumerate(spec.cat_names):
    rows = np.unique(np.asarray(batch['cat'][:, j]))
    want += np.sum(np.asarray(tables[f'embed_{n}'])[rows] ** 2)
  rows = np.unique(np.asarray(batch['multi']['m']))
  rows = rows[rows > 0]  # id 0 pads a multi-valued field
  want += np.sum(np.asarray(tables['embed_m'])[rows] ** 2)
  assert float(got) == pytest.approx(want / batch['cat'].shape[0], rel=1e-5)


@pytest.mark.parametrize('sparse', [False, True])
def test_embedding_l2_pulls_the_batch_rows_only(sparse):
  """One step with and without λ: the batch's rows differ by the penalty's gradient direction
  (towards 0), rows outside the batch are untouched, in the dense and the row-sparse step."""
  c, spec, model, tx = _setup(sparse=sparse, lr=0.01)
  batch = _batches(spec, 1)[0]
  out = {}
  for l2 in (0.0, 10.0):
    opt = tx._replace(embedding_l2=l2)
    state = _init(model, opt, batch)
    new, step_metrics = jax.jit(train_state.make_train_step(model, opt, 0.0))(state, batch)
    out[l2] = (state, new, step_metrics)
  before = np.asarray(out[0.0][0].params['features']['embed_a'])
  plain = np.asarray(out[0.0][1].params['features']['embed_a'])
  decayed = np.asarray(out[10.0][1].params['features']['embed_a'])
  seen = np.unique(np.asarray(batch['cat'][:, 0]))
  unseen = np.setdiff1d(np.arange(before.shape[0]), seen)
  np.testing.assert_array_equal(decayed[unseen], before[unseen])
  # Adam's first step is ±lr per coordinate: the penalty flips it towards 0 where it dominates.
  assert np.sum(np.abs(decayed[seen])) < np.sum(np.abs(plain[seen]))
  assert 'embedding_l2' in out[10.0][2] and 'embedding_l2' not in out[0.0][2]


def test_dense_and_sparse_steps_agree_with_embedding_l2():
  batch = _batches(_spec(), 1)[0]
  results = []
  for sparse in (False, True):
    c, spec, model, tx = _setup(sparse=sparse, lr=0.01)
    tx = tx._replace(embedding_l2=0.5)
    state = _init(model, tx, batch)
    new, m = jax.jit(train_state.make_train_step(model, tx, 0.0))(state, batch)
    results.append((float(m['loss']), float(m['embedding_l2']),
                    np.asarray(new.params['features']['embed_a'])))
  assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  np.testing.assert_allclose(results[0][2], results[1][2], atol=1e-6)  # Adam's first step


def test_make_optimizer_carries_embedding_l2_and_rejects_negative():
  c = small_config()
  c.train.embedding_l2 = 1e-3
  assert train_state.make_optimizer(c.train, 10).embedding_l2 == 1e-3
  c.train.sparse_embeddings = True
  assert train_state.make_optimizer(c.train, 10).embedding_l2 == 1e-3
  c.train.embedding_l2 = -1.0
  with pytest.raises(ConfigError, match='embedding_l2'):
    train_state.make_optimizer(c.train, 10)


def test_linear_schedule_decays_to_zero_after_warmup():
  c = small_config()
  c.train.learning_rate, c.train.schedule, c.train.warmup_steps = 1e-2, 'linear', 10
  lr = train_state.learning_rate_schedule(c.train, 110)
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1e-2)
  assert float(lr(60)) == pytest.approx(5e-3) and float(lr(110)) == pytest.approx(0.0)
  c.train.schedule = 'cosin'
  with pytest.raises(ConfigError, match="'cosin'"):
    train_state.learning_rate_schedule(c.train, 110)


def test_min_count_maps_rare_training_ids_to_oov_everywhere():
  c = small_config(num_train=5_000, num_val=2_000, num_test=2_000)
  _, plain = synthetic.generate(c.data)
  c.data.min_count = 3
  _, cut = synthetic.generate(c.data)
  counts = np.bincount(plain['train']['cat'][:, 0])
  for split in ('train', 'validation', 'test'):
    ids, new = plain[split]['cat'][:, 0], cut[split]['cat'][:, 0]
    rare = np.array([i >= len(counts) or counts[i] < 3 for i in ids])
    assert rare.any()
    np.testing.assert_array_equal(new, np.where(rare, 0, ids))
    np.testing.assert_array_equal(cut[split]['prob'], plain[split]['prob'])  # the oracle stays

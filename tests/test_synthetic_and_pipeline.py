import numpy as np
import pytest

from midpg_jax.data import load_dataset, pipeline, synthetic
from midpg_jax.data.schema import validate_columns
from conftest import small_config


@pytest.fixture(scope='module')
def ds():
  return load_dataset(small_config().data)


def test_deterministic_from_seed(ds):
  again = load_dataset(small_config().data)
  for split in ds.splits:
    for k in ds.splits[split]:
      np.testing.assert_array_equal(ds.splits[split][k], again.splits[split][k])
  other = load_dataset(small_config(seed=1).data)
  assert not np.array_equal(other.splits['train']['label'], ds.splits['train']['label'])


def test_realistic_shape(ds):
  c = small_config()
  train = ds.splits['train']
  assert {k: len(v['label']) for k, v in ds.splits.items()} == {
      'train': c.data.num_train, 'validation': c.data.num_val, 'test': c.data.num_test}
  shares = np.bincount(train['scenario'], minlength=4) / len(train['label'])
  np.testing.assert_allclose(shares, c.data.scenario_weights, atol=0.02)
  for s, rate in enumerate(c.data.base_rates):
    observed = train['prob'][train['scenario'] == s].mean()
    assert observed == pytest.approx(rate, rel=0.05)  # calibrated bias hits the base rate
    assert 0.01 <= observed <= 0.10
  # Zipf: the most frequent id of the largest field is far above uniform.
  counts = np.bincount(train['cat'][:, 0])
  assert counts.max() > 50 * len(train['label']) / c.data.vocab_sizes[0]
  # Shifted field: its id distribution differs between scenarios.
  f = c.data.shifted_fields[0]
  top0 = np.bincount(train['cat'][train['scenario'] == 0, f]).argmax()
  top1 = np.bincount(train['cat'][train['scenario'] == 1, f]).argmax()
  assert top0 != top1
  # Labels are Bernoulli(prob).
  assert abs(train['label'].mean() - train['prob'].mean()) < 0.005


def test_heterogeneity_knob():
  """At 0 one function and one bias serve every scenario; base rates then differ only through
  the features' shift. At 1 each scenario has its own part and base rate."""
  rates = {}
  for h in (0.0, 1.0):
    train = load_dataset(small_config(heterogeneity=h).data).splits['train']
    rates[h] = [train['prob'][train['scenario'] == s].mean() for s in range(4)]
  assert np.std(rates[1.0]) > 3 * np.std(rates[0.0])


def test_bad_generator_config():
  with pytest.raises(ValueError, match='base_rates'):
    synthetic.generate(small_config(base_rates=(0.1, 0.2)).data)
  with pytest.raises(ValueError, match='heterogeneity'):
    synthetic.generate(small_config(heterogeneity=-1.0).data)


def test_validate_columns_names_the_problem(ds):
  cols = {k: v.copy() for k, v in ds.splits['test'].items()}
  cols['label'][7] = 2.0
  with pytest.raises(ValueError, match='label outside .* row 7'):
    validate_columns(cols, ds.spec, 'test split')
  cols = {k: v.copy() for k, v in ds.splits['test'].items()}
  cols['dense'][3, 1] = np.nan
  with pytest.raises(ValueError, match='non-finite dense .* row 3'):
    validate_columns(cols, ds.spec, 'test split')
  cols = {k: v.copy() for k, v in ds.splits['test'].items()}
  cols['scenario'][5] = 9
  with pytest.raises(ValueError, match='scenario id 9 at row 5'):
    validate_columns(cols, ds.spec, 'test split')
  cols = {k: v for k, v in ds.splits['test'].items() if k != 'dense'}
  with pytest.raises(ValueError, match="missing column 'dense'"):
    validate_columns(cols, ds.spec, 'test split')


def test_train_batches_shuffle_deterministically_and_resume(ds):
  train = ds.splits['train']
  a = list(pipeline.train_batches(train, 1000, seed=0, epoch=0))
  b = list(pipeline.train_batches(train, 1000, seed=0, epoch=0, start_step=5))
  assert len(a) == len(train['label']) // 1000
  np.testing.assert_array_equal(a[5]['cat'], b[0]['cat'])
  c = next(pipeline.train_batches(train, 1000, seed=0, epoch=1))
  assert not np.array_equal(a[0]['cat'], c['cat'])
  assert all(x['weight'].sum() == 1000 for x in a)
  # Two processes take disjoint halves of the same global batch.
  p0 = next(pipeline.train_batches(train, 1000, 0, 0, process_index=0, process_count=2))
  p1 = next(pipeline.train_batches(train, 1000, 0, 0, process_index=1, process_count=2))
  np.testing.assert_array_equal(np.sort(np.concatenate([p0['label'], p1['label']])),
                                np.sort(a[0]['label']))


@pytest.mark.parametrize('processes', [1, 3])
def test_eval_batches_cover_each_row_exactly_once(ds, processes):
  cols = {k: v[:1234] for k, v in ds.splits['test'].items()}
  cols['row'] = np.arange(1234)
  seen = []
  counts = []
  for p in range(processes):
    batches = list(pipeline.eval_batches(cols, 100, process_index=p, process_count=processes))
    counts.append(len(batches))
    for b in batches:
      seen.extend(b['row'][b['weight'] > 0])
  assert len(set(counts)) == 1
  assert sorted(seen) == list(range(1234))


@pytest.mark.parametrize('n', [1, 1000, 10_000, 10_007])
def test_epoch_order_is_a_permutation_computed_window_by_window(n):
  # Small blocks and windows, so 10k rows span several windows and a partial last block.
  order = pipeline.EpochOrder(n, seed=3, epoch=1, block_rows=16, window_rows=1024)
  whole = order.rows(0, n)
  assert sorted(whole.tolist()) == list(range(n))
  again = pipeline.EpochOrder(n, seed=3, epoch=1, block_rows=16, window_rows=1024)
  pieces = np.concatenate([again.rows(lo, min(n, lo + 333)) for lo in range(0, n, 333)])
  np.testing.assert_array_equal(pieces, whole)  # any slicing (resume, processes) agrees
  if n >= 1000:
    other = pipeline.EpochOrder(n, seed=3, epoch=2, block_rows=16, window_rows=1024).rows(0, n)
    assert not np.array_equal(other, whole)
    # Shuffled, not just block-rotated: neighbours in the order are rarely neighbouring rows.
    assert np.mean(np.abs(np.diff(whole)) == 1) < 0.05

"""Real-dataset preparation: samples of Ali-CCP / MIND / Douban, fixtures of IAAC / AliExpress /
Amazon, every bad input, reuse, the TFDS builder and a training smoke run on MIND."""

import gzip
import json
import math
import os
import pathlib
import shutil

import numpy as np
import pytest

from midpg_jax.data import (aliccp, aliexpress, amazon, encode, fit, iaac, load_dataset, prepare,
                            reader, scenario_wise_rec, sources)
import samples
from conftest import config_file, swr_samples

aliccp_config, aliexpress_config, amazon_config, douban_config, iaac_config, mind_config = (
    config_file(name) for name in ('aliccp', 'aliexpress', 'amazon', 'douban', 'iaac', 'mind'))

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'tests' / 'fixtures'
IAAC_FILE = 'round1_ijcai_18_train_20180301.txt'


def shared_samples() -> pathlib.Path:
  """The Scenario-Wise-Rec-form samples of Ali-CCP, MIND and Douban (tests/samples.py)."""
  return swr_samples()


def data_cfg(config_module, manual_dir, tmp_path, **overrides):
  cfg = config_module.get_config().data
  cfg.manual_dir = str(manual_dir)
  cfg.prepared_dir = str(tmp_path / 'prepared' / cfg.name)
  cfg.progress = False
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def raw_splits(module, cfg):
  return sources.collect_splits(module.source(cfg))


def rows(ds):
  return {s: len(c['label']) for s, c in ds.splits.items()}


def read_json(path):
  with open(path) as f:
    return json.load(f)


# ---------------------------------------------------------------------------------------------
# Real samples.


SAMPLE_FILES = samples.ALICCP_FILES


def test_aliccp_sample_clicked_rows_and_entire_space(tmp_path):
  cfg = data_cfg(aliccp_config, shared_samples(), tmp_path, min_count=1, **SAMPLE_FILES)
  ds = load_dataset(cfg)
  assert rows(ds) == {'train': 25, 'validation': 13, 'test': 13}  # every 4th row is clicked
  assert ds.spec.scenario_names == ('301=1', '301=2', '301=3')
  assert len(ds.spec.cat_names) == 22 and '301' not in ds.spec.cat_names
  assert ds.spec.dense_names[0] == 'D109_14' and ds.spec.num_dense == 8
  train = ds.splits['train']
  assert isinstance(train['cat'], np.memmap) and isinstance(train['label'], np.memmap)
  assert train['cat'].dtype == np.int32 and train['dense'].dtype == np.float32
  assert sorted(set(ds.splits['test']['scenario'].tolist())) == [0, 1, 2]  # 3 only at test
  # Dense scaling fitted on train: train standardised (constant columns stay 0).
  np.testing.assert_allclose(np.asarray(train['dense']).mean(axis=0), 0, atol=1e-5)
  mapping = read_json(os.path.join(cfg.prepared_dir, 'scenarios.json'))
  assert mapping['mapping'] == {'1': 0, '2': 1, '3': 2} and mapping['field'] == '301'
  meta = read_json(os.path.join(cfg.prepared_dir, 'meta.json'))
  assert meta['splits']['train']['positives'] == 13  # every 8th row is bought

  whole = data_cfg(aliccp_config, shared_samples(), tmp_path / 'whole', min_count=1, clicked_only=False,
                   **SAMPLE_FILES)
  assert rows(load_dataset(whole)) == {'train': 100, 'validation': 50, 'test': 50}


def test_mind_sample_split_is_deterministic_and_vocab_fitted_on_train(tmp_path):
  cfg = data_cfg(mind_config, shared_samples(), tmp_path)
  ds = load_dataset(cfg)
  assert rows(ds) == {'train': 800, 'validation': 100, 'test': 100}
  assert ds.spec.scenario_names == ('finance', 'lifestyle', 'news', 'sports')
  assert ds.spec.cat_names == ('User_ID', 'News_ID', 'SubCategory')
  train_cat = np.asarray(ds.splits['train']['cat'])
  assert (train_cat > 0).all()  # min_count 1: every training id is known
  assert (np.asarray(ds.splits['test']['cat'])[:, 0] == 0).any()  # unseen users are OOV
  # Same seed, same split; another seed, another split.
  test_lines = lambda c: np.concatenate([  # noqa: E731
      p.lines for p in raw_splits(scenario_wise_rec, c)['test']])
  np.testing.assert_array_equal(test_lines(cfg), test_lines(cfg))
  cfg2 = data_cfg(mind_config, shared_samples(), tmp_path, seed=1)
  assert not np.array_equal(test_lines(cfg), test_lines(cfg2))
  # min_count: ids seen once in train become 0.
  cfg3 = data_cfg(mind_config, shared_samples(), tmp_path / 'mc', min_count=2)
  ds3 = load_dataset(cfg3)
  assert ds3.spec.cat_vocab_sizes[0] < ds.spec.cat_vocab_sizes[0]
  assert (np.asarray(ds3.splits['train']['cat'])[:, 0] == 0).any()


def test_douban_sample(tmp_path):
  ds = load_dataset(data_cfg(douban_config, shared_samples(), tmp_path))
  assert rows(ds) == {'train': 480, 'validation': 60, 'test': 60}
  assert ds.spec.scenario_names == ('book', 'movie', 'music')
  assert 'living_place' in ds.spec.cat_names
  labels = np.concatenate([c['label'] for c in ds.splits.values()])
  assert labels.sum() == samples.DOUBAN_POSITIVES


# ---------------------------------------------------------------------------------------------
# Fixtures of the formats without a shared sample.


def test_iaac_fixture_time_split_multi_valued_and_dense(tmp_path):
  cfg = data_cfg(iaac_config, FIXTURES / 'iaac', tmp_path, min_count=1)
  ds = load_dataset(cfg)
  assert rows(ds) == {'train': 20, 'validation': 10, 'test': 10}
  spec = ds.spec
  assert spec.scenario_names == tuple(f'user_gender_id={v}' for v in (-1, 0, 1, 2))
  assert 'user_gender_id' not in spec.cat_names and 'hour' in spec.cat_names
  assert spec.multi_names == ('item_category_list', 'item_property_list',
                              'predict_category_property')
  assert spec.multi_max_lens == (3, 16, 8)
  multi = ds.splits['train']['multi']
  # Every token kept (not only the last): 2 categories, 1-4 properties, 2 predicted categories.
  assert ((multi['item_category_list'] > 0).sum(axis=1) == 2).all()
  assert (multi['item_property_list'] > 0).sum(axis=1).max() == 4
  assert ((multi['predict_category_property'] > 0).sum(axis=1) == 2).all()
  assert spec.num_dense == 4
  # The split is by day (UTC+8): train before validation before test.
  raw = raw_splits(iaac, cfg)
  t = {s: sources.column(raw[s], 'context_timestamp') for s in raw}
  assert t['train'].max() < t['validation'].min() and t['validation'].max() < t['test'].min()
  # The other scenario field.
  alt = data_cfg(iaac_config, FIXTURES / 'iaac', tmp_path / 'alt', min_count=1,
                 scenario_field='context_page_id')
  ds_alt = load_dataset(alt)
  assert ds_alt.spec.scenario_names == tuple(f'context_page_id={v}' for v in (4001, 4002, 4003))
  assert 'user_gender_id' in ds_alt.spec.cat_names
  assert 'context_page_id' not in ds_alt.spec.cat_names


def test_aliexpress_fixture_countries_and_session_split(tmp_path):
  cfg = data_cfg(aliexpress_config, FIXTURES / 'aliexpress', tmp_path, min_count=1,
                 countries=('NL', 'ES'), validation_fraction=0.5)
  ds = load_dataset(cfg)
  assert ds.spec.scenario_names == ('ES', 'NL')
  assert ds.spec.num_dense == 63 and len(ds.spec.cat_names) == 16
  r = rows(ds)
  assert r['train'] + r['validation'] == 36 and r['test'] == 18  # clicked rows (every other)
  assert r['train'] > 0 and r['validation'] > 0
  tables = raw_splits(aliexpress, cfg)
  for country in ('NL', 'ES'):
    def sessions(split, country=country):
      t = tables[split]
      mine = sources.column(t, 'country').astype(str) == country
      return set(sources.column(t, 'search_id')[mine].tolist())
    assert sessions('train') and not sessions('train') & sessions('validation')


def test_amazon_fixture_json_gz_and_csv(tmp_path):
  src = tmp_path / 'src'
  src.mkdir()
  shutil.copy(FIXTURES / 'amazon' / 'reviews_Beauty_5.json', src)
  with open(FIXTURES / 'amazon' / 'reviews_Health_and_Personal_Care_5.json', 'rb') as f, \
      gzip.open(src / 'reviews_Health_and_Personal_Care_5.json.gz', 'wb') as g:
    g.write(f.read())
  cfg = data_cfg(amazon_config, src, tmp_path, categories=('Beauty', 'Health_and_Personal_Care'),
                 min_count=1)
  ds = load_dataset(cfg)
  assert rows(ds) == {'train': 48, 'validation': 6, 'test': 6}
  assert ds.spec.scenario_names == ('Beauty', 'Health_and_Personal_Care')
  raw = raw_splits(amazon, cfg)
  t = {s: sources.column(raw[s], 'unixReviewTime') for s in raw}
  assert t['train'].max() <= t['validation'].min() and t['validation'].max() <= t['test'].min()
  for s in raw:
    label = sources.column(raw[s], 'label')
    np.testing.assert_array_equal(label, sources.column(raw[s], 'overall') >= 4)
    np.testing.assert_array_equal(ds.splits[s]['label'], label)
  # Ratings-only CSV files without a header.
  csv_dir = tmp_path / 'csv'
  csv_dir.mkdir()
  for category in ('Beauty', 'Health_and_Personal_Care'):
    with open(FIXTURES / 'amazon' / f'reviews_{category}_5.json') as f, \
        open(csv_dir / f'ratings_{category}.csv', 'w') as g:
      for line in f:
        r = json.loads(line)
        g.write(f'{r["reviewerID"]},{r["asin"]},{r["overall"]},{r["unixReviewTime"]}\n')
  cfg_csv = data_cfg(amazon_config, csv_dir, tmp_path / 'csvprep',
                     categories=('Beauty', 'Health_and_Personal_Care'), min_count=1,
                     file_pattern='ratings_{category}.csv',
                     csv_column_names=('reviewerID', 'asin', 'overall', 'unixReviewTime'))
  ds_csv = load_dataset(cfg_csv)
  for s in ds.splits:
    np.testing.assert_array_equal(ds_csv.splits[s]['cat'], ds.splits[s]['cat'])


def test_multi_valued_tokens_unknown_dropped_and_truncated():
  import pyarrow as pa
  field = encode.MultiField('f', ';', 2, part_sep=':')
  flat, lengths = encode.tokenize(pa.chunked_array([pa.array(['a:1;b:2;c', '', 'x;a'])]), field)
  assert flat.to_pylist() == ['a', 'b', 'c', '', 'x', 'a'] and lengths.tolist() == [3, 1, 2]
  counts = fit.IdCounts()
  counts.add(pa.array(['a', 'b', 'c']))
  counts.add(pa.array(['c', '']))
  vocab = counts.vocabulary(min_count=1)
  assert vocab.tolist() == ['a', 'b', 'c']  # sorted; '' never gets an id
  assert counts.vocabulary(min_count=2).tolist() == ['c']
  ids = encode.IdLookup(vocab)(flat)
  np.testing.assert_array_equal(encode.pad_ids(ids, lengths, 2), [[1, 2], [0, 0], [1, 0]])


# ---------------------------------------------------------------------------------------------
# Bad input.

_ALICCP_HEADER = ['click', 'purchase', *aliccp.SPARSE_COLUMNS[:18], '301',
                  *aliccp.SPARSE_COLUMNS[18:], *aliccp.DENSE_COLUMNS]


def write_aliccp(directory, n=9, edits=(), drop_column=None):
  """Tiny Ali-CCP files; edits: (split file stem, data row, column, text)."""
  os.makedirs(directory, exist_ok=True)
  for stem in ('train', 'val', 'test'):
    header = [c for c in _ALICCP_HEADER if c != drop_column]
    lines = [','.join(header)]
    for i in range(n):
      value = {'click': '1', 'purchase': str(i % 2), '301': str(i % 3 + 1)}
      row = [value.get(c, '0.5' if c.startswith('D') else str(i % 4 + 1)) for c in header]
      for s, r, c, text in edits:
        if s == stem and r == i:
          row[header.index(c)] = text
      lines.append(','.join(row))
    with open(os.path.join(directory, f'ali_ccp_{stem}.csv'), 'w') as f:
      f.write('\n'.join(lines) + '\n')


def aliccp_cfg(tmp_path, **kw):
  return data_cfg(aliccp_config, tmp_path / 'raw', tmp_path, **{'min_count': 1, **kw})


def test_missing_and_misnamed_files(tmp_path):
  (tmp_path / 'empty').mkdir()
  with pytest.raises(prepare.DataError, match=r"round1_ijcai_18_train_20180301\.txt.*empty"):
    load_dataset(data_cfg(iaac_config, tmp_path / 'empty', tmp_path))
  misnamed = tmp_path / 'misnamed'
  misnamed.mkdir()
  shutil.copy(FIXTURES / 'iaac' / IAAC_FILE, misnamed / 'round1_train.txt')
  with pytest.raises(prepare.DataError, match=r"expected a file matching "
                     r"'round1_ijcai_18_train_20180301\.txt'.*round1_train\.txt"):
    load_dataset(data_cfg(iaac_config, misnamed, tmp_path))
  with pytest.raises(prepare.DataError, match='(?s)manual_dir is not set.*tianchi'):
    load_dataset(data_cfg(iaac_config, '', tmp_path))
  write_aliccp(tmp_path / 'raw')
  os.remove(tmp_path / 'raw' / 'ali_ccp_val.csv')
  with pytest.raises(prepare.DataError, match=r"Ali-CCP validation split.*ali_ccp_val\*\.csv"):
    load_dataset(aliccp_cfg(tmp_path))
  with pytest.raises(prepare.DataError, match=r"AliExpress FR train.*AliExpress_FR"):
    load_dataset(data_cfg(aliexpress_config, FIXTURES / 'aliexpress', tmp_path,
                          countries=('NL', 'FR')))
  assert not os.path.exists(tmp_path / 'prepared') or not os.listdir(tmp_path / 'prepared')


def test_missing_column(tmp_path):
  write_aliccp(tmp_path / 'raw', drop_column='D508')
  with pytest.raises(prepare.DataError,
                     match=r"ali_ccp_train\.csv: missing column\(s\) \['D508'\]"):
    load_dataset(aliccp_cfg(tmp_path))
  # Amazon JSON without a field.
  src = tmp_path / 'amz'
  src.mkdir()
  with open(src / 'reviews_Beauty_5.json', 'w') as f:
    f.write(json.dumps({'reviewerID': 'a', 'asin': 'b', 'overall': 5.0}) + '\n')
  with pytest.raises(prepare.DataError, match="missing field 'unixReviewTime'"):
    load_dataset(data_cfg(amazon_config, src, tmp_path, categories=('Beauty',)))


@pytest.mark.parametrize('column,text,message', [
    ('205', 'abc', r"ali_ccp_val\.csv, line 5, column '205': 'abc' is not an integer id"),
    ('206', '', r"ali_ccp_val\.csv, line 5, column '206': missing or NaN value"),
    ('D508', 'nan', r"ali_ccp_val\.csv, line 5, column 'D508': missing or NaN value"),
    ('D509', 'x1', r"ali_ccp_val\.csv, line 5, column 'D509': 'x1' is not a number"),
    ('purchase', '2', r"ali_ccp_val\.csv, line 5, column 'purchase': label 2 is outside"),
    ('click', '0.5', r"ali_ccp_val\.csv, line 5, column 'click': label 0.5 is outside"),
])
def test_bad_values_name_file_line_and_column(tmp_path, column, text, message):
  write_aliccp(tmp_path / 'raw', edits=[('val', 3, column, text)])
  with pytest.raises(prepare.DataError, match=message):
    load_dataset(aliccp_cfg(tmp_path))


def test_non_numeric_id_in_space_separated_iaac(tmp_path):
  src = tmp_path / 'raw'
  src.mkdir()
  lines = (FIXTURES / 'iaac' / IAAC_FILE).read_text().splitlines()
  parts = lines[7].split(' ')
  parts[1] = 'item-7'  # item_id
  lines[7] = ' '.join(parts)
  (src / IAAC_FILE).write_text('\n'.join(lines) + '\n')
  with pytest.raises(prepare.DataError,
                     match=rf"{IAAC_FILE}, line 8, column 'item_id': 'item-7' is not an integer"):
    load_dataset(data_cfg(iaac_config, src, tmp_path))


def test_unseen_scenario_is_an_error(tmp_path):
  # A value outside the configured scenario_values.
  write_aliccp(tmp_path / 'raw', edits=[('test', 4, '301', '4')])
  with pytest.raises(prepare.DataError, match=r"test split: scenario value '4' of field '301' "
                     r"\(.*ali_ccp_test\.csv, line 6\) does not occur in config\.data\."
                     r"scenario_values"):
    load_dataset(aliccp_cfg(tmp_path))
  # A value missing from the training split (scenarios discovered from train).
  src = tmp_path / 'iaac'
  src.mkdir()
  lines = (FIXTURES / 'iaac' / IAAC_FILE).read_text().splitlines()
  header = lines[0].split(' ')
  g = header.index('user_gender_id')
  for i in range(1, len(lines)):
    parts = lines[i].split(' ')
    if (i - 1) % 4 == 3:  # a test-day row
      parts[g] = '7'
      lines[i] = ' '.join(parts)
      line_no = i + 1
      break
  (src / IAAC_FILE).write_text('\n'.join(lines) + '\n')
  with pytest.raises(prepare.DataError, match=rf"test split: scenario value '7' of field "
                     rf"'user_gender_id' \(.*{IAAC_FILE}, line {line_no}\) does not occur in "
                     r"the training split"):
    load_dataset(data_cfg(iaac_config, src, tmp_path, min_count=1))


def test_empty_split_is_an_error(tmp_path):
  write_aliccp(tmp_path / 'raw', edits=[('val', i, 'click', '0') for i in range(9)])
  with pytest.raises(prepare.DataError, match=r"the validation split is empty.*ali_ccp_val\.csv"):
    load_dataset(aliccp_cfg(tmp_path))
  assert os.listdir(tmp_path / 'prepared') == []


def _snapshot(directory):
  return {str(p.relative_to(directory)): p.read_bytes() for p in pathlib.Path(directory).rglob('*')
          if p.is_file()}


def test_reuse_and_a_failed_run_leaves_the_earlier_dataset_intact(tmp_path, monkeypatch):
  write_aliccp(tmp_path / 'raw')
  cfg = aliccp_cfg(tmp_path)
  first = load_dataset(cfg)
  before = _snapshot(cfg.prepared_dir)

  # Reused while the sources are unchanged: the raw files are not read again.
  monkeypatch.setattr(reader, 'iter_csv', lambda *a, **k: pytest.fail('rebuilt'))
  again = load_dataset(cfg)
  np.testing.assert_array_equal(again.splits['train']['cat'], first.splits['train']['cat'])
  monkeypatch.undo()

  # Other settings: an error, not a silent rebuild or a stale dataset.
  with pytest.raises(prepare.DataError, match=r'other settings \(min_count: 1 -> 2\)'):
    load_dataset(aliccp_cfg(tmp_path, min_count=2))

  # A rebuild that fails (bad data) leaves the earlier dataset as it was, and no temp folders.
  write_aliccp(tmp_path / 'raw', edits=[('train', 2, 'D702', 'NaN')])
  with pytest.raises(prepare.DataError, match="column 'D702'"):
    load_dataset(aliccp_cfg(tmp_path, rebuild=True))
  assert _snapshot(cfg.prepared_dir) == before
  assert sorted(os.listdir(tmp_path / 'prepared')) == ['aliccp']

  # A rebuild that succeeds replaces it.
  write_aliccp(tmp_path / 'raw', n=12)
  rebuilt = load_dataset(aliccp_cfg(tmp_path, rebuild=True))
  assert len(rebuilt.splits['train']['label']) == 12
  assert sorted(os.listdir(tmp_path / 'prepared')) == ['aliccp']


# ---------------------------------------------------------------------------------------------
# TFDS builder and training.


def test_tfds_builder_writes_array_record_of_the_raw_rows(tmp_path):
  from midpg_jax.data import tfds_builders  # imports tensorflow_datasets (no TensorFlow)
  cfg = data_cfg(iaac_config, FIXTURES / 'iaac', tmp_path, min_count=1)
  builder = tfds_builders.build(cfg, str(tmp_path / 'tfds'))
  files = sorted(os.listdir(builder.data_dir))
  assert any(f.startswith('midpg_iaac-train.array_record') for f in files)
  columnar = load_dataset(cfg)
  for split in ('train', 'validation', 'test'):
    source = builder.as_data_source(split=split)
    assert len(source) == len(columnar.splits[split]['label'])
  record = builder.as_data_source(split='test')[0]
  assert record['scenario'] in (b'-1', b'0', b'1', b'2')
  assert record['dense'].shape == (4,) and record['label'] in (0, 1)
  assert len(record['item_category_list']) == 2  # raw tokens, every one
  assert IAAC_FILE in builder.MANUAL_DOWNLOAD_INSTRUCTIONS
  # Built once: a second build reuses the files.
  mtime = os.path.getmtime(os.path.join(builder.data_dir, files[0]))
  again = tfds_builders.build(cfg, str(tmp_path / 'tfds'))
  assert os.path.getmtime(os.path.join(again.data_dir, files[0])) == mtime


@pytest.mark.slow
def test_training_smoke_run_on_mind_reports_per_scenario_auc(tmp_path):
  from midpg_jax import trainer
  config = mind_config.get_config()
  config.data = data_cfg(mind_config, shared_samples(), tmp_path)
  config.train.progress_bar = False
  config.train.num_epochs = 8
  config.train.early_stop_patience = 0
  config.train.batch_size = 256
  config.train.eval_batch_size = 1024
  config.model.hidden = (32, 16)
  summary = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  for split in ('validation', 'test'):
    result = summary[split]
    assert set(result) == {*samples.MIND_CATEGORIES, 'overall'}
    assert result['overall']['count'] == 100 == sum(
        result[s]['count'] for s in samples.MIND_CATEGORIES)
    assert all(math.isfinite(m['logloss']) for m in result.values())
  # The clicks follow the subcategory (samples.py), which the model learns (a model that did not
  # learn it scores 0.5).
  assert summary['test']['overall']['auc'] > 0.7, summary['test']['overall']  # measured 0.743

"""Issue 11's data items: the prepared cache follows its sources, and malformed files get one line
naming file, line and column. Tiny Ali-CCP files (see test_datasets.write_aliccp)."""

import json
import logging
import os
import time

import numpy as np
import pytest

from midpg_jax.data import encode, load_dataset, prepare, reader
from conftest import config_file
from test_datasets import FIXTURES, aliccp_cfg, data_cfg, shared_samples, write_aliccp

aliccp_config = config_file('aliccp')


def _rewrite(path, edit):
  with open(path) as f:
    text = f.read()
  with open(path, 'w') as f:
    f.write(edit(text))


def test_prepared_data_is_rebuilt_when_its_sources_change(tmp_path, caplog):
  write_aliccp(tmp_path / 'raw')
  cfg = aliccp_cfg(tmp_path)
  assert len(load_dataset(cfg).splits['train']['label']) == 9
  # Rows cut (size changes): prepared again, with a line saying why.
  train = tmp_path / 'raw' / 'ali_ccp_train.csv'
  _rewrite(train, lambda t: '\n'.join(t.splitlines()[:6]) + '\n')
  with caplog.at_level(logging.WARNING):
    ds = load_dataset(cfg)
  assert len(ds.splits['train']['label']) == 5
  assert 'ali_ccp_train.csv changed size' in caplog.text and 'preparing it again' in caplog.text
  # Same size, other content (labels rewritten): the modification time tells.
  caplog.clear()
  before = np.asarray(ds.splits['train']['label']).copy()
  time.sleep(0.01)
  _rewrite(train, lambda t: t.replace('\n1,0,', '\n1,X,').replace('\n1,1,', '\n1,0,')
           .replace('\n1,X,', '\n1,1,'))
  with caplog.at_level(logging.WARNING):
    ds = load_dataset(cfg)
  assert 'ali_ccp_train.csv was modified' in caplog.text
  np.testing.assert_array_equal(ds.splits['train']['label'], 1 - before)
  # Unchanged: reused without a word.
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    load_dataset(cfg)
  assert caplog.text == ''


def test_a_missing_or_other_manual_dir_never_uses_the_cache(tmp_path, caplog):
  write_aliccp(tmp_path / 'raw')
  load_dataset(aliccp_cfg(tmp_path))
  missing = aliccp_cfg(tmp_path)
  missing.manual_dir = str(tmp_path / 'nope')
  with pytest.raises(prepare.DataError, match=r"manual_dir=.*nope' is not a folder"):
    load_dataset(missing)
  write_aliccp(tmp_path / 'other', n=4)
  other = aliccp_cfg(tmp_path)
  other.manual_dir = str(tmp_path / 'other')
  with caplog.at_level(logging.WARNING):
    assert len(load_dataset(other).splits['train']['label']) == 4
  assert 'other/ali_ccp_train.csv is new' in caplog.text


def test_sample_files_in_the_same_folder_are_not_merged(tmp_path):
  write_aliccp(tmp_path / 'raw', n=9)
  write_aliccp(tmp_path / 'samples', n=4)
  for stem in ('train', 'val', 'test'):
    os.rename(tmp_path / 'samples' / f'ali_ccp_{stem}.csv',
              tmp_path / 'raw' / f'ali_ccp_{stem}_sample.csv')
  ds = load_dataset(aliccp_cfg(tmp_path))
  assert {s: len(c['label']) for s, c in ds.splits.items()} == {
      'train': 9, 'validation': 9, 'test': 9}


def test_a_file_cut_inside_its_last_number_is_reported(tmp_path, caplog):
  write_aliccp(tmp_path / 'raw')
  _rewrite(tmp_path / 'raw' / 'ali_ccp_test.csv', lambda t: t.rstrip('\n')[:-1])  # '0.5' -> '0.'
  with caplog.at_level(logging.WARNING):
    load_dataset(aliccp_cfg(tmp_path))
  assert 'ali_ccp_test.csv, line 10: the file does not end with a newline' in caplog.text


def test_a_truncated_last_line_names_its_line(tmp_path):
  write_aliccp(tmp_path / 'raw')
  _rewrite(tmp_path / 'raw' / 'ali_ccp_val.csv', lambda t: t[:t.rstrip('\n').rindex(',') - 30])
  with pytest.raises(prepare.DataError, match=r"ali_ccp_val\.csv, line 10: \d+ fields where the "
                     r"header has 33 \(the last line: the file looks cut off\)"):
    load_dataset(aliccp_cfg(tmp_path))


def test_spaces_after_the_header_commas_are_stripped(tmp_path):
  write_aliccp(tmp_path / 'plain')
  plain = load_dataset(data_cfg(aliccp_config, tmp_path / 'plain', tmp_path / 'a', min_count=1))
  write_aliccp(tmp_path / 'spaced')
  for stem in ('train', 'val', 'test'):
    _rewrite(tmp_path / 'spaced' / f'ali_ccp_{stem}.csv',
             lambda t: t.replace(',', ', '))
  spaced = load_dataset(data_cfg(aliccp_config, tmp_path / 'spaced', tmp_path / 'b', min_count=1))
  for s in plain.splits:
    for k in ('cat', 'dense', 'scenario', 'label'):
      np.testing.assert_array_equal(spaced.splits[s][k], plain.splits[s][k])


def test_an_oversized_id_names_line_and_column(tmp_path):
  write_aliccp(tmp_path / 'raw', edits=[('train', 6, '206', '99999999999999999999')])
  with pytest.raises(prepare.DataError, match=r"ali_ccp_train\.csv, line 8, column '206': "
                     r"99999999999999999999 is outside the 64-bit integer range"):
    load_dataset(aliccp_cfg(tmp_path))


def test_a_configured_scenario_missing_from_training_is_a_warning(tmp_path, caplog):
  write_aliccp(tmp_path / 'raw', edits=[('train', i, '301', '1') for i in range(9)])
  with caplog.at_level(logging.WARNING):
    ds = load_dataset(aliccp_cfg(tmp_path))
  assert ds.spec.scenario_names == ('301=1', '301=2', '301=3')
  assert ("scenario 301='2' (config.data.scenario_values) never occurs in the training split but "
          "in validation 3 rows, test 3 rows") in caplog.text
  assert "301='3'" in caplog.text and "301='1'" not in caplog.text


def test_encoder_round_trip_and_unknown_scenario(tmp_path):
  write_aliccp(tmp_path / 'raw')
  cfg = aliccp_cfg(tmp_path)
  ds = load_dataset(cfg)
  enc = encode.Encoder.load(cfg.prepared_dir)
  assert enc.spec == ds.spec
  path = str(tmp_path / 'raw' / 'ali_ccp_test.csv')
  (columns, first_line), = reader.iter_csv(path, enc.raw_kinds)
  cols = enc.encode(columns, source=path, first_line=first_line, with_label=False)
  for k in ('cat', 'dense', 'scenario'):
    np.testing.assert_array_equal(cols[k], ds.splits['test'][k])
  columns['301'] = encode.pa.array(['1'] * 8 + ['9'])
  with pytest.raises(prepare.DataError, match=r"ali_ccp_test\.csv, line 10: scenario value '9'"):
    enc.encode(columns, source=path, first_line=first_line)


def test_a_dataset_prepared_by_an_older_format_is_prepared_again(tmp_path, caplog):
  write_aliccp(tmp_path / 'raw')
  cfg = aliccp_cfg(tmp_path)
  load_dataset(cfg)
  meta_path = os.path.join(cfg.prepared_dir, 'meta.json')
  with open(meta_path) as f:
    meta = json.load(f)
  meta['format_version'] = 1
  with open(meta_path, 'w') as f:
    json.dump(meta, f)
  with caplog.at_level(logging.WARNING):
    load_dataset(cfg)
  assert 'prepared by another version of this code (format 1, now 2)' in caplog.text
  assert prepare.read_meta(cfg.prepared_dir)['format_version'] == 2


def _columns(ds):
  return {(s, k): np.asarray(v) for s, c in ds.splits.items() for k, v in c.items()
          if k != 'multi'}


@pytest.mark.parametrize('config_name', ['mind', 'aliccp', 'iaac'])
def test_many_small_chunks_prepare_the_same_columns_as_one(tmp_path, monkeypatch, config_name):
  """Streaming: counts, moments, scenario checks and the writer's offsets merge across chunks."""
  module = config_file(config_name)
  if config_name == 'mind':
    source, extra = shared_samples(), {}
  elif config_name == 'iaac':
    source, extra = FIXTURES / 'iaac', {'min_count': 1}
  else:
    write_aliccp(tmp_path / 'raw', n=300)
    source, extra = tmp_path / 'raw', {'min_count': 2, 'clicked_only': False}
  one = load_dataset(data_cfg(module, source, tmp_path / 'one', **extra))
  monkeypatch.setattr(reader, 'BLOCK_SIZE', 2048)  # a few dozen rows per chunk
  many = load_dataset(data_cfg(module, source, tmp_path / 'many', **extra))
  assert one.spec == many.spec
  a, b = _columns(one), _columns(many)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-6, err_msg=str(key))
  for s in one.splits:
    for name, m in one.splits[s].get('multi', {}).items():
      np.testing.assert_array_equal(many.splits[s]['multi'][name], m)


def test_id_counts_switch_from_a_dense_range_to_hashing():
  from midpg_jax.data import fit
  counts = fit.IdCounts()
  counts.add(encode.pa.array([5, 6, 6, 7], encode.pa.int64()))
  assert counts.dense is not None
  counts.add(encode.pa.array([6, -3, 10**12, 10**12], encode.pa.int64()))  # too wide a range
  assert counts.dense is None
  assert counts.vocabulary(1).tolist() == [-3, 5, 6, 7, 10**12]
  assert counts.vocabulary(2).tolist() == [6, 10**12]
  lookup = encode.IdLookup(counts.vocabulary(1))
  assert lookup.table is None  # a wide vocabulary is looked up by hashing
  np.testing.assert_array_equal(lookup(np.array([10**12, 4, -3])), [5, 0, 1])
  narrow = encode.IdLookup(np.array([3, 9]))
  np.testing.assert_array_equal(narrow(np.array([9, 3, 4, -1, 100])), [2, 1, 0, 0, 0])


def test_id_lookup_by_table_with_and_without_ids_outside_the_vocabulary():
  # Vocabulary starting at 0 (looked up without shifting) and one starting below 0.
  from_zero = encode.IdLookup(np.array([0, 2, 5]))
  np.testing.assert_array_equal(from_zero(np.array([5, 0, 2])), [3, 1, 2])  # all in range
  np.testing.assert_array_equal(from_zero(np.array([5, 1, -1, 6, 0])), [3, 0, 0, 0, 1])
  negative = encode.IdLookup(np.array([-4, 7]))
  np.testing.assert_array_equal(negative(np.array([7, -4, -5, 8, 0])), [2, 1, 0, 0, 0])
  assert from_zero(np.zeros(0, np.int64)).shape == (0,)


def test_a_chunk_of_one_split_is_split_without_copying():
  from midpg_jax.data import sources
  cols = {'a': encode.pa.array([1, 2, 3, 4])}
  lines = np.arange(2, 6)
  one = sources.Chunk(cols, 'f.csv', lines, np.array([1, 1, 1, 1], np.int8))
  [(split, part)] = list(one.by_split())
  assert split == 'validation' and part is one  # the spill's chunks: no copy of every column
  mixed = sources.Chunk(cols, 'f.csv', lines, np.array([0, 2, 0, 2], np.int8))
  parts = dict(mixed.by_split())
  assert sorted(parts) == ['test', 'train']
  assert parts['test'].columns['a'].to_pylist() == [2, 4] and parts['test'].lines.tolist() == [3, 5]
  empty = sources.Chunk({'a': encode.pa.array([], encode.pa.int64())}, 'f.csv',
                        np.zeros(0, np.int64), np.zeros(0, np.int8))
  assert list(empty.by_split()) == []

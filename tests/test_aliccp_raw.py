"""The raw Ali-CCP release reader: the same columns as the Scenario-Wise-Rec CSV form for the same
rows (a hand-written pair of fixtures, and generated files against a line-by-line statement of the
rules), and every malformed input as a DataError naming file and line."""

import gzip
import pathlib
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from midpg_jax.data import aliccp_raw
from midpg_jax.errors import DataError
# The generator is a script (scripts/ is a package of the checkout, not installed).
from scripts import make_raw_aliccp

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / 'tests' / 'fixtures' / 'aliccp_raw'

SWR_NAME = {'train': 'train', 'validation': 'val', 'test': 'test'}


def read_raw(directory, split, chunk_rows=1 << 16):
  chunks = list(aliccp_raw.iter_raw_aliccp(str(directory), split, chunk_rows=chunk_rows))
  for columns, first_line in chunks:
    assert first_line == columns[aliccp_raw.LINE][0].as_py()
  return {c: np.concatenate([ch[c].to_numpy() for ch, _ in chunks]) for c in chunks[0][0]}


def read_swr(path):
  types = {c: pa.float64() if c.startswith('D') else pa.int64() for c in aliccp_raw.COLUMNS}
  table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
  assert tuple(table.column_names) == aliccp_raw.COLUMNS
  return {c: table.column(c).to_numpy() for c in aliccp_raw.COLUMNS}


def assert_same_columns(raw, swr):
  for c in aliccp_raw.COLUMNS:
    assert raw[c].dtype == (np.float64 if c.startswith('D') else np.int64), c
    np.testing.assert_array_equal(raw[c], swr[c], err_msg=f'column {c}')


def copy_fixture(tmp_path):
  target = tmp_path / 'raw'
  shutil.copytree(FIXTURE, target)
  return target


def edit_line(path, line, text):
  lines = path.read_text().split('\n')
  lines[line - 1] = text
  path.write_text('\n'.join(lines))


@pytest.mark.parametrize('split', aliccp_raw.SPLITS)
def test_hand_written_pair_gives_identical_columns(split):
  raw = read_raw(FIXTURE, split)
  assert_same_columns(raw, read_swr(FIXTURE / f'ali_ccp_{SWR_NAME[split]}.csv'))
  lines = {'train': [1, 2, 4, 5, 6, 7, 8, 9, 10], 'validation': [2, 5, 6], 'test': [1, 3, 7]}
  np.testing.assert_array_equal(raw[aliccp_raw.LINE], lines[split])  # click 0 / buy 1 dropped


def test_chunks_and_gzip_change_nothing(tmp_path, monkeypatch):
  whole = read_raw(FIXTURE, 'train')
  np.testing.assert_equal(read_raw(FIXTURE, 'train', chunk_rows=2), whole)
  monkeypatch.setattr(aliccp_raw, '_COMMON_BLOCK', 400)  # blocks of 1-2 keys, not all fields
  aliccp_raw._cache.clear()
  np.testing.assert_equal(read_raw(FIXTURE, 'train'), whole)
  monkeypatch.undo()
  zipped = tmp_path / 'gz'
  zipped.mkdir()
  for part in ('train', 'test'):
    for stem in ('sample_skeleton', 'common_features'):
      with gzip.open(zipped / f'{stem}_{part}.csv.gz', 'wb') as f:
        f.write((FIXTURE / f'{stem}_{part}.csv').read_bytes())
  assert aliccp_raw.detect_raw_release(str(zipped))
  np.testing.assert_equal(read_raw(zipped, 'train'), whole)


def test_generated_release_matches_line_by_line_rules(tmp_path, monkeypatch):
  """Random multi-valued rows over several parse blocks and chunks against `swr_rows`."""
  monkeypatch.setattr(aliccp_raw, '_MIN_BLOCK', 1 << 14)
  monkeypatch.setattr(aliccp_raw, '_COMMON_BLOCK', 1 << 14)
  make_raw_aliccp.write_release(str(tmp_path), rows=700, seed=3, behaviour_items=6)
  make_raw_aliccp.write_swr(str(tmp_path))
  for split in aliccp_raw.SPLITS:
    raw = read_raw(tmp_path, split, chunk_rows=64)
    assert_same_columns(raw, read_swr(tmp_path / f'ali_ccp_{SWR_NAME[split]}.csv'))
    assert len(raw['click']) > 50


def test_line_by_line_rules_agree_with_hand_written_form(tmp_path):
  """The statement of the rules the generated test relies on, checked against the hand."""
  raw = copy_fixture(tmp_path)
  make_raw_aliccp.write_swr(str(raw))
  for name in SWR_NAME.values():
    np.testing.assert_equal(read_swr(raw / f'ali_ccp_{name}.csv'),
                            read_swr(FIXTURE / f'ali_ccp_{name}.csv'))


def test_detects_the_release_form_only(tmp_path):
  assert aliccp_raw.detect_raw_release(str(FIXTURE))
  (tmp_path / 'ali_ccp_train.csv').write_text('click\n')
  assert not aliccp_raw.detect_raw_release(str(tmp_path))


def test_scenario_ids_number_first_appearance_in_kept_training_rows():
  assert aliccp_raw.scenario_ids(str(FIXTURE)) == {9100017: 1, 9100232: 2, 9100555: 3}


def test_missing_scenario_field_is_swr_missing_value(tmp_path):
  raw = copy_fixture(tmp_path)
  edit_line(raw / 'sample_skeleton_train.csv', 2,
            '2,1,0,3c59dc048e8850243be8079a5c74d079,1,205\x021002\x031')
  cols = read_raw(raw, 'train')
  assert cols['301'][1] == 0 and cols['205'][1] == 1002 and cols['D508'][1] == 0.0


K = 'ffffffffffffffffffffffffffffffff'


@pytest.mark.parametrize('file, line, text, message', [
    ('sample_skeleton_train.csv', 5, f'5,0,0,{K},1,205\x021\x031',
     rf"sample_skeleton_train\.csv, line 5: common_feature_index '{K}' is not in the "
     'common_features file'),
    ('sample_skeleton_train.csv', 4, '4,1,1,x,1',
     r'sample_skeleton_train\.csv, line 4: expected 6 comma-separated columns .* found 5'),
    ('sample_skeleton_train.csv', 6, f'6,0,0,{K},1,205\x021',
     r"sample_skeleton_train\.csv, line 6: the feature list '205\\x021' is not field_id"),
    ('sample_skeleton_train.csv', 7, f'7,1,0,{K},2,301\x02{9100017}\x031\x01205\x02ab\x031',
     r"sample_skeleton_train\.csv, line 7, feature id: 'ab' is not an integer"),
    ('sample_skeleton_train.csv', 7, f'7,1,0,{K},1,205\x0299999999999999999999\x031',
     r"sample_skeleton_train\.csv: feature id out of the 64-bit integer range"),
    ('sample_skeleton_train.csv', 9, f'9,0,0,{K},1,508\x02609\x03x',
     r"sample_skeleton_train\.csv, line 9, field '508': value 'x' is not a finite number"),
    ('sample_skeleton_train.csv', 8, f'8,2,0,{K},1,301\x02{9100232}\x031',
     r"sample_skeleton_train\.csv, line 8, column 'click': '2' is not a label 0 or 1"),
    ('sample_skeleton_train.csv', 10, '10,1,0,37693cfc748049e45d87b8c7d8b9aacd,1,301\x02123\x031',
     r"sample_skeleton_train\.csv, line 10, field '301': feature id 123 is none of the 3 "
     'scenario ids'),
    ('sample_skeleton_train.csv', 8, '8x,0,0,37693cfc748049e45d87b8c7d8b9aacd,1,301\x021\x031',
     r"sample_skeleton_train\.csv, line 8, sample_id: '8x' is not an integer"),
    ('common_features_train.csv', 4, '3c59dc048e8850243be8079a5c74d079,1,101\x021\x031',
     r"common_features_train\.csv, line 4: common_feature_index '3c59.*' already on line 1"),
    ('common_features_train.csv', 2, 'b6d767d2f8ed5d21a44b0e5886680cb9,1,109_14\x021\x03inf',
     r"common_features_train\.csv, line 2, field '109_14': value 'inf' is not a finite"),
])
def test_malformed_input_names_file_and_line(tmp_path, file, line, text, message):
  raw = copy_fixture(tmp_path)
  edit_line(raw / file, line, text)
  with pytest.raises(DataError, match=message):
    read_raw(raw, 'train')


@pytest.mark.parametrize('features', [
    '205\x021\x022\x031', '205\x021\x031\x01\x01206\x022\x031', '205\x021\x031\x01',
    '205\x031\x021', '205\x021\x031\x00', '\x021\x031\x01205'])
def test_malformed_feature_list_names_line(tmp_path, features):
  raw = copy_fixture(tmp_path)
  edit_line(raw / 'sample_skeleton_train.csv', 6,
            f'6,0,0,37693cfc748049e45d87b8c7d8b9aacd,2,301\x029100232\x031\x01{features}')
  with pytest.raises(DataError, match=r'sample_skeleton_train\.csv, line 6: the feature list '
                     r".* is not field_id\\x02feature_id\\x03value items joined by \\x01"):
    read_raw(raw, 'train')


def test_missing_file_says_where_to_download(tmp_path):
  raw = copy_fixture(tmp_path)
  (raw / 'common_features_test.csv').unlink()
  read_raw(raw, 'train')  # the training files are enough for the training split
  with pytest.raises(DataError, match=r'(?s)common_features_test\.csv \(or \.csv\.gz\) is not in '
                     r'.*tianchi\.aliyun\.com/dataset/408'):
    read_raw(raw, 'test')


# ---------------------------------------------------------------------------------------------
# Through preparation: `configs/aliccp.py` reads either form from the same manual_dir option.


def _prepared(tmp_path, file_format, **overrides):
  from conftest import config_file
  aliccp_config = config_file('aliccp')
  from midpg_jax.data import load_dataset
  cfg = aliccp_config.get_config().data
  cfg.manual_dir = str(FIXTURE)
  cfg.prepared_dir = str(tmp_path / file_format / 'aliccp')
  cfg.progress = False
  cfg.min_count = 1
  cfg.file_format = file_format
  for k, v in overrides.items():
    cfg[k] = v
  return load_dataset(cfg)


@pytest.mark.parametrize('clicked_only', [True, False])
def test_preparing_the_raw_release_equals_preparing_the_swr_form(tmp_path, clicked_only):
  raw = _prepared(tmp_path, 'raw_release', clicked_only=clicked_only)
  swr = _prepared(tmp_path, 'swr_csv', clicked_only=clicked_only)
  assert raw.spec == swr.spec
  for split in ('train', 'validation', 'test'):
    assert len(raw.splits[split]['label']) > 0
    for key in ('cat', 'dense', 'scenario', 'label'):
      np.testing.assert_array_equal(np.asarray(raw.splits[split][key]),
                                    np.asarray(swr.splits[split][key]), err_msg=f'{split}/{key}')


def test_auto_format_picks_the_raw_release_when_its_skeleton_is_there(tmp_path):
  auto = _prepared(tmp_path, 'auto')
  raw = _prepared(tmp_path, 'raw_release')
  np.testing.assert_array_equal(np.asarray(auto.splits['train']['cat']),
                                np.asarray(raw.splits['train']['cat']))
  meta = (tmp_path / 'auto' / 'aliccp' / 'meta.json').read_text()
  assert 'sample_skeleton_train.csv' in meta and 'ali_ccp_train.csv' not in meta

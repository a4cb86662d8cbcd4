"""Issue 22, serving: nothing lost and nothing silently wrong when a trained run scores or is
exported. Outputs never replace an input, a run or a folder of the user's; data of another
preparation, values that are not of their column's kind, ids out of range and damaged export files
are errors naming file, column and value; the exported function itself never returns NaN
(docs/robustness.md). Faults of the machine and of concurrent runs are in tests/test_faults.py."""

import errno
import hashlib
import json
import os
import shutil

import numpy as np
import pyarrow.csv as pacsv
import pytest

import midpg_jax
from midpg_jax import evaluation, export, predict, trainer
from midpg_jax.data import load_dataset
from midpg_jax.errors import CheckpointError, DataError, StorageError
from test_api import TEST_FILE, aliccp_tiny_config

pytest.importorskip('flatbuffers', reason='jax.export serialisation needs flatbuffers')


def _digest(path) -> str:
  return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def _full(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(config, run, export folder): the tiny Ali-CCP run of test_api, trained and exported once."""
  if not os.path.isfile(TEST_FILE):
    pytest.skip(f'the Ali-CCP samples are not in {os.path.dirname(TEST_FILE)}')
  tmp = tmp_path_factory.mktemp('serving')
  config = aliccp_tiny_config(tmp)
  trainer.train_and_evaluate(config, str(tmp / 'run'))
  run = midpg_jax.load_run(str(tmp / 'run'))
  return config, run, export.export_run(run, str(tmp / 'export'))


@pytest.fixture(scope='module')
def raw_columns():
  table = pacsv.read_csv(TEST_FILE)
  return {name: table.column(name).to_numpy() for name in table.column_names}


# ------------------------------------------------------------------------------------------------
# Nothing lost.


def test_predict_refuses_to_write_over_its_input(trained, tmp_path, monkeypatch):
  _, run, _ = trained
  rows = tmp_path / 'rows.csv'
  shutil.copy(TEST_FILE, rows)
  monkeypatch.chdir(tmp_path)
  for output in ('rows.csv', str(rows)):  # the same file by two names
    with pytest.raises(DataError, match=rf"^--output '{output}' would replace the input file "):
      predict.predict_file(run, str(rows), output, progress=False)
  assert _digest(rows) == _digest(TEST_FILE)


def test_disk_full_in_predict_keeps_the_earlier_output(trained, tmp_path, monkeypatch):
  _, run, _ = trained
  out = tmp_path / 'scores.csv'
  out.write_text('earlier scores\n')
  write = predict._Writer.write
  calls = []

  def fills_up(self, table):  # the second chunk's write meets a full disk
    calls.append(1)
    return write(self, table) if len(calls) == 1 else _full()

  monkeypatch.setattr(predict._Writer, 'write', fills_up)
  with pytest.raises(StorageError, match=rf'^writing {out}: No space left on device; {out} is '
                     'unchanged$'):
    predict.predict_file(run, TEST_FILE, str(out), chunk_bytes=1024, progress=False)
  assert out.read_text() == 'earlier scores\n' and sorted(os.listdir(tmp_path)) == ['scores.csv']


def test_export_refuses_the_run_itself_and_folders_that_are_not_exports(trained, tmp_path):
  _, run, _ = trained
  before = sorted(os.listdir(run.workdir))
  for out in (run.workdir, os.path.dirname(run.workdir)):
    with pytest.raises(DataError, match=rf'^{out} holds the run being exported'):
      export.export_run(run, out)
  assert sorted(os.listdir(run.workdir)) == before
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'notes.txt').write_text('precious')
  (mine / 'export.json').write_text('{}')  # even beside a stamp
  with pytest.raises(DataError, match=rf'^{mine} exists and is not a midpg-jax export \(it holds '
                     r'export.json, notes.txt\): refusing to replace it'):
    export.export_run(run, str(mine))
  assert (mine / 'notes.txt').read_text() == 'precious'
  (tmp_path / 'empty').mkdir()  # a new or empty folder is fine
  assert export.load_exported(export.export_run(run, str(tmp_path / 'empty'))).stamp['step'] >= 1


def test_disk_full_in_export_keeps_the_earlier_export(trained, monkeypatch):
  _, run, out = trained
  stamp = _digest(os.path.join(out, 'export.json'))
  monkeypatch.setattr(np, 'savez', _full)
  with pytest.raises(StorageError, match=rf'^exporting to {out}: No space left on device; {out} '
                     'is unchanged$'):
    export.export_run(run, out)
  assert _digest(os.path.join(out, 'export.json')) == stamp
  assert [e for e in os.listdir(os.path.dirname(out)) if e.startswith('.')] == []  # no staging
  monkeypatch.undo()
  export.export_run(run, out)  # an export is replaced
  assert _digest(os.path.join(out, 'export.json')) != stamp


# ------------------------------------------------------------------------------------------------
# The run's data: its encoder fingerprint.


def test_a_prepared_dataset_and_its_runs_carry_the_encoder_fingerprint(trained):
  config, run, out = trained
  fingerprint = run.spec.encoder_fingerprint
  assert len(fingerprint) == 64 and run.encoder.fingerprint == fingerprint  # loaded == fitted
  assert json.load(open(os.path.join(out, 'spec.json')))['encoder_fingerprint'] == fingerprint


def test_data_of_another_preparation_is_refused(trained, tmp_path):
  config, run, _ = trained
  other = aliccp_tiny_config(tmp_path).data
  other.min_count = 1  # other vocabularies: ids of the run's tables mean other values
  load_dataset(other)
  message = (rf"^prepared_dir {other.prepared_dir} is not the data the run in {run.workdir} was "
             r"trained on \(encoder fingerprint \w{12}, the run's \w{12}\)")
  with pytest.raises(DataError, match=message):
    midpg_jax.load_run(run.workdir, prepared_dir=other.prepared_dir).predict(TEST_FILE)
  with pytest.raises(DataError, match=message):
    predict.predict_file(midpg_jax.load_run(run.workdir, prepared_dir=other.prepared_dir),
                         TEST_FILE, str(tmp_path / 'scores.csv'), progress=False)
  assert not os.path.exists(tmp_path / 'scores.csv')
  # A run from before fingerprints: its shapes are compared.
  old = tmp_path / 'old_run'
  shutil.copytree(run.workdir, old)
  spec = json.load(open(old / 'feature_spec.json'))
  del spec['encoder_fingerprint']
  (old / 'feature_spec.json').write_text(json.dumps(spec))
  with pytest.raises(DataError, match=r'is not the data .* \(cat_vocab_sizes \(\d+, '):
    export.export_run(midpg_jax.load_run(str(old), prepared_dir=other.prepared_dir),
                      str(tmp_path / 'export'))
  assert not os.path.exists(tmp_path / 'export')


def test_evaluating_or_resuming_on_data_prepared_again_from_other_files_is_refused(trained,
                                                                                   tmp_path):
  """The run's own config; its source files replaced since it was trained: preparation sees them
  changed and prepares again, with other vocabularies."""
  from midpg_jax import run_config
  config, run, _ = trained
  moved = config.copy_and_resolve_references()
  moved.data.manual_dir = str(tmp_path / 'raw')
  moved.data.prepared_dir = str(tmp_path / 'prepared')
  shutil.copytree(config.data.manual_dir, moved.data.manual_dir,
                  ignore=lambda d, names: [n for n in names if not n.startswith('ali_ccp_')])
  workdir = str(tmp_path / 'run')
  shutil.copytree(run.workdir, workdir)
  run_config.save(workdir, moved)
  shutil.copy(os.path.join(moved.data.manual_dir, 'ali_ccp_val_sample.csv'),
              os.path.join(moved.data.manual_dir, 'ali_ccp_train_sample.csv'))
  message = (r"^dataset 'aliccp' is not the data the run in .* was trained on \(encoder "
             r"fingerprint \w{12}, the run's \w{12}\): it was prepared from other files")
  with pytest.raises(DataError, match=message):
    evaluation.evaluate_checkpoint(moved, workdir, 'test')
  metrics = open(os.path.join(workdir, 'metrics.jsonl')).read()
  with pytest.raises(DataError, match=message):
    trainer.train_and_evaluate(moved, workdir)
  assert open(os.path.join(workdir, 'metrics.jsonl')).read() == metrics


# ------------------------------------------------------------------------------------------------
# Raw rows given in memory are checked as a file's.


@pytest.mark.parametrize('column, value, message', [
    ('D508', np.nan, "row 3, column 'D508': missing or NaN value where a number is expected"),
    ('D508', 'abc', "row 3, column 'D508': 'abc' is not a number"),
    ('101', 'u12', "row 3, column '101': 'u12' is not an integer id"),
    ('101', None, "row 3, column '101': missing or NaN value where an integer is expected")])
def test_raw_rows_in_memory_are_checked_like_a_file(trained, raw_columns, column, value,
                                                    message):
  _, run, out = trained
  rows = dict(raw_columns)
  rows[column] = rows[column].astype(object if isinstance(value, str) or value is None else float)
  rows[column][3] = value
  with pytest.raises(DataError, match=rf"^<rows>, {message}$"):
    run.predict(rows)
  with pytest.raises(DataError, match=rf"^<rows>, {message}$"):
    export.load_exported(out).predict(rows)


def test_a_pandas_dataframe_with_a_nan_names_the_row(trained):
  pd = pytest.importorskip('pandas', reason='pandas is optional')
  frame = pd.read_csv(TEST_FILE)
  frame.loc[7, 'D508'] = np.nan
  with pytest.raises(DataError, match=r"^<rows>, row 7, column 'D508': missing or NaN"):
    trained[1].predict(frame)


# ------------------------------------------------------------------------------------------------
# Encoded columns: the run's predict_columns and the export's loader check them alike; the
# exported function itself never gives NaN.


def _bad(columns, **changes):
  out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in columns.items()}
  for key, edit in changes.items():
    out[key] = edit(out[key])
  return out


def _set(row, col, value):
  def edit(a):
    a = a.copy()
    a[(row, col) if col is not None else row] = value
    return a
  return edit


@pytest.mark.parametrize('changes, message', [
    ({'scenario': _set(2, None, 7)}, r'scenario id 7 at row 2 is outside \[0, 3\)'),
    ({'cat': _set(2, 0, 10**6)}, r"field '101' id 1000000 at row 2 is outside \[0, \d+\)"),
    ({'cat': _set(4, 1, -1)}, r"field '121' id -1 at row 4 is outside \[0, \d+\)"),
    ({'cat': lambda a: a[:, :3]}, r'cat has shape \(50, 3\), expected \(N, 22\) with N = 50'),
    ({'cat': lambda a: a + 0.5}, r'cat must hold integer ids, got dtype float64'),
    ({'dense': _set(5, 1, np.inf)}, r"non-finite dense feature '\w+' at row 5: inf"),
    ({'scenario': lambda a: a[:10]}, r'cat has shape \(50, 22\), expected \(N, 22\) with N = 10')])
def test_encoded_columns_out_of_range_or_shape_are_errors(trained, raw_columns, changes, message):
  _, run, out = trained
  columns = _bad(run.encode(raw_columns), **changes)
  for model in (run, export.load_exported(out)):
    with pytest.raises(DataError, match=rf'^encoded columns: {message}'):
      model.predict_columns(columns)


def test_an_empty_batch_gives_no_probabilities(trained, raw_columns):
  _, run, out = trained
  empty = {k: v[:0] for k, v in run.encode(raw_columns).items()}
  for model in (run, export.load_exported(out)):
    assert model.predict_columns(empty).shape == (0,)


def test_the_exported_function_reads_unknown_ids_as_oov_and_marks_unscorable_rows(trained,
                                                                                  raw_columns):
  """Called without the loader's checks (as a server in another language would call it)."""
  _, run, out = trained
  columns = run.encode(raw_columns)
  served = export.load_exported(out)
  call = lambda c: np.asarray(served._call(served._variables, c['cat'], c['dense'],  # noqa: E731
                                           c['scenario'], ()))
  probs = call(columns)
  beyond = _bad(columns, cat=_set(2, 0, 10**6))
  oov = _bad(columns, cat=_set(2, 0, 0))
  np.testing.assert_array_equal(call(beyond), call(oov))
  wrong = _bad(columns, scenario=_set(3, None, 7), dense=_set(9, 0, np.nan))
  got = call(wrong)
  assert got[3] == got[9] == export.UNSCORABLE and not np.isnan(got).any()
  others = np.setdiff1d(np.arange(50), [3, 9])
  np.testing.assert_array_equal(got[others], probs[others])  # the other rows are untouched
  assert served.stamp['unscorable'] == export.UNSCORABLE


@pytest.mark.parametrize('name, damage, message', [
    ('variables.npz', lambda b: b'garbage', r'variables\.npz is corrupt \(ValueError: '),
    ('variables.npz', lambda b: b[:len(b) // 2], r'variables\.npz is corrupt \(BadZipFile: '),
    ('model.jaxexport', lambda b: b'garbage', r'model\.jaxexport is corrupt \(\w+: '),
    ('model.jaxexport', lambda b: b[:len(b) // 2], r'model\.jaxexport is corrupt \(\w+: '),
    ('spec.json', lambda b: b'{', r'spec\.json is corrupt \(JSONDecodeError: '),
    ('export.json', None, r'is not a midpg-jax export \(no export\.json\)'),
    ('model.jaxexport', None, r'model\.jaxexport is missing: .* is not a complete export')])
def test_a_damaged_export_names_the_file(trained, tmp_path, name, damage, message):
  out = str(tmp_path / 'export')
  shutil.copytree(trained[2], out)
  path = os.path.join(out, name)
  if damage is None:
    os.remove(path)
  else:
    data = open(path, 'rb').read()
    open(path, 'wb').write(damage(data))
  with pytest.raises(CheckpointError, match=message):
    export.load_exported(out)


def test_variables_of_another_export_are_refused(trained, tmp_path):
  out = str(tmp_path / 'export')
  shutil.copytree(trained[2], out)
  np.savez(os.path.join(out, 'variables.npz'), leaf_0=np.zeros(3, np.float32))
  with pytest.raises(CheckpointError, match=r'variables\.npz does not fit .*model\.jaxexport \(1 '
                     r'arrays for a function of other parameters\): the files are from different'):
    export.load_exported(out)

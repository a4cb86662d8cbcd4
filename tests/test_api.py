"""The Python API and the predict command: raw rows score exactly as eval scores the prepared
split."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import midpg_jax
from conftest import config_file, small_config, swr_samples
from midpg_jax import evaluation, metrics, trainer
from midpg_jax.errors import DataError
from samples import ALICCP_FILES

aliccp_config = config_file('aliccp')
SAMPLES = str(swr_samples())
TEST_FILE = os.path.join(SAMPLES, ALICCP_FILES['test_files'])


def aliccp_tiny_config(tmp):
  c = aliccp_config.get_config()
  small = small_config()
  c.model, c.train = small.model, small.train
  c.model.hidden, c.model.embed_dim = (16,), 4
  c.train.batch_size, c.train.eval_batch_size, c.train.num_epochs = 32, 16, 1
  c.data.manual_dir = SAMPLES
  c.data.update(ALICCP_FILES)
  c.data.prepared_dir = str(tmp / 'prepared')
  c.data.clicked_only = False  # every row of the raw test file is in the prepared test split
  c.data.min_count = 2  # some test ids are out of vocabulary: the OOV path is compared too
  c.data.progress = False
  return c


@pytest.fixture(scope='module')
def aliccp_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('aliccp')
  config = aliccp_tiny_config(tmp)
  workdir = str(tmp / 'run')
  trainer.train_and_evaluate(config, workdir)  # 3 steps on the 100 training rows
  _, eval_probs, dataset, _ = evaluation.evaluate_checkpoint(config, workdir, 'test')
  return workdir, eval_probs, dataset


@pytest.fixture(scope='module')
def run(aliccp_run):
  """The loaded run, shared: each load_run compiles its predict function once."""
  return midpg_jax.load_run(aliccp_run[0])


def test_predict_on_the_raw_test_file_equals_eval_on_the_prepared_split(aliccp_run, run):
  _, eval_probs, dataset = aliccp_run
  assert run.config.data.name == 'aliccp' and run.spec == dataset.spec
  # The run's own record of its test split: the 50 rows of the file, the AUC of eval's scores.
  test = run.final_metrics['test']['overall']
  assert test['count'] == 50 and run.metrics
  assert test['auc'] == pytest.approx(metrics.auc(dataset.splits['test']['label'], eval_probs))
  assert (dataset.splits['test']['cat'] == 0).any()  # unknown ids took the OOV id
  probs = run.predict(TEST_FILE)
  assert probs.shape == (50,) and np.std(probs) > 0
  np.testing.assert_array_equal(probs, eval_probs)
  # The same rows as a dict of columns, values as the file has them (ids as ints, '301' too).
  table = pacsv.read_csv(TEST_FILE)
  columns = {name: table.column(name).to_numpy() for name in table.column_names}
  np.testing.assert_array_equal(run.predict(columns), eval_probs)


def test_predict_takes_a_pandas_dataframe(aliccp_run, run):
  import pandas as pd  # optional for users; requirements-bench.txt installs it for the tests
  np.testing.assert_array_equal(run.predict(pd.read_csv(TEST_FILE)), aliccp_run[1])


@pytest.mark.parametrize('suffix', ['.csv', '.parquet'])
def test_predict_file_streams_chunks_into_csv_or_parquet(aliccp_run, run, tmp_path, suffix):
  from midpg_jax import predict
  eval_probs = aliccp_run[1]
  out = str(tmp_path / f'scores{suffix}')
  # ~10 rows per chunk: several chunks, and the id columns come through as they are.
  result = predict.predict_file(run, TEST_FILE, out, id_columns=['101', 'click'],
                                chunk_bytes=1024, progress=False)
  assert result['rows'] == 50
  table = pq.read_table(out) if suffix == '.parquet' else pacsv.read_csv(out)
  assert table.column_names == ['101', 'click', 'probability']
  raw = pacsv.read_csv(TEST_FILE)
  assert table.column('101').to_pylist() == raw.column('101').to_pylist()
  assert [str(v) for v in table.column('click').to_pylist()] == [
      str(v) for v in raw.column('click').to_pylist()]
  np.testing.assert_allclose(table.column('probability').to_numpy(), eval_probs, rtol=1e-6)
  assert not os.path.exists(out + '.tmp')


def test_predict_bad_value_names_file_line_and_column_and_writes_nothing(aliccp_run, tmp_path):
  workdir, _, _ = aliccp_run
  bad = tmp_path / 'bad.csv'
  lines = open(TEST_FILE).read().splitlines()
  header = lines[0].split(',')
  fields = lines[7].split(',')  # line 8 of the file
  fields[header.index('D508')] = 'abc'
  lines[7] = ','.join(fields)
  bad.write_text('\n'.join(lines) + '\n')
  out = tmp_path / 'scores.csv'
  proc = subprocess.run([sys.executable, '-m', 'midpg_jax.commands.predict', '--workdir', workdir,
                         '--input', str(bad), '--output', str(out), '--noprogress',
                         '--compile_cache='], capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  assert re.search(r"bad.csv, line 8, column 'D508'", proc.stderr), proc.stderr[-3000:]
  assert not out.exists() and not (tmp_path / 'scores.csv.tmp').exists()
  with pytest.raises(DataError, match=r"line 8, column 'D508'"):
    midpg_jax.load_run(workdir).predict(str(bad))


def test_predict_file_bad_value_in_a_later_chunk_removes_the_chunks_already_written(
    run, tmp_path, monkeypatch):
  """The reading thread meets the bad line while earlier chunks are scored and written: the
  caller gets the same DataError (file, line, column) and no output, partial or complete."""
  from midpg_jax import predict
  bad = tmp_path / 'bad.csv'
  lines = open(TEST_FILE).read().splitlines()
  header = lines[0].split(',')
  fields = lines[44].split(',')  # line 45 of the file: the 4th chunk or later at 1 kB a chunk
  fields[header.index('D508')] = 'abc'
  lines[44] = ','.join(fields)
  bad.write_text('\n'.join(lines) + '\n')
  written = []
  write = predict._Writer.write
  monkeypatch.setattr(predict._Writer, 'write', lambda self, t: (written.append(t.num_rows),
                                                                  write(self, t)))
  out = str(tmp_path / 'scores.csv')
  with pytest.raises(DataError, match=r"bad.csv, line 45, column 'D508'"):
    predict.predict_file(run, str(bad), out, chunk_bytes=1024, progress=False)
  assert written and sum(written) < 43  # earlier chunks were written, then removed
  assert not os.path.exists(out) and not os.path.exists(out + '.tmp')


def test_predict_file_in_small_scenario_calls_keeps_the_input_order(aliccp_run, run, tmp_path):
  """~10-row chunks scored in calls of one scenario's rows (8 rows, or 2 with padding): the
  output follows the input, each row with its eval.py score."""
  from midpg_jax import predict
  out = str(tmp_path / 'scores.csv')
  predict.predict_file(run, TEST_FILE, out, chunk_bytes=1024, progress=False, batch_size=8)
  table = pacsv.read_csv(out)
  assert table.column('row').to_pylist() == list(range(50))
  np.testing.assert_allclose(table.column('probability').to_numpy(), aliccp_run[1], rtol=1e-6)


def test_predict_cli_writes_row_index_without_id_columns_and_caches_its_compile(aliccp_run,
                                                                                tmp_path):
  """The command as a user runs it (a fresh process): a `row` column, and the compiled predict
  function lands in --compile_cache, so the next call loads it instead of compiling."""
  workdir, eval_probs, _ = aliccp_run
  out, cache = str(tmp_path / 'scores.csv'), tmp_path / 'xla'
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  proc = subprocess.run([sys.executable, '-m', 'midpg_jax.commands.predict', '--workdir',
                         workdir, '--input', TEST_FILE, '--output', out, '--noprogress',
                         '--compile_cache', str(cache)], env=dict(env, JAX_PLATFORMS='cpu'),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert cache.is_dir() and any(cache.iterdir())
  table = pacsv.read_csv(out)
  assert table.column_names == ['row', 'probability']
  assert table.column('row').to_pylist() == list(range(50))
  # The command turns XLA's YNNPACK dot fusions off (other dot kernels: float32 rounding; up to
  # 1.1e-6 relative measured on 1M rows).
  np.testing.assert_allclose(table.column('probability').to_numpy(), eval_probs, rtol=2e-6)


def test_unknown_scenario_value_is_a_data_error(run):
  table = pacsv.read_csv(TEST_FILE)
  columns = {name: table.column(name).to_numpy() for name in table.column_names}
  columns['301'] = columns['301'].copy()
  columns['301'][4] = 9
  with pytest.raises(DataError, match="<rows>, row 4: scenario value '9'"):  # 0-based, as pandas
    run.predict(columns)


def test_run_found_from_another_folder_and_missing_prepared_data_is_clear(aliccp_run, tmp_path,
                                                                         monkeypatch):
  workdir, eval_probs, _ = aliccp_run
  monkeypatch.chdir(tmp_path)
  run = midpg_jax.load_run(workdir)
  np.testing.assert_array_equal(run.predict(TEST_FILE), eval_probs)
  moved = str(tmp_path / 'moved_prepared')
  shutil.copytree(run.prepared_dir, moved)
  np.testing.assert_array_equal(midpg_jax.load_run(workdir, prepared_dir=moved).predict(
      TEST_FILE), eval_probs)


def test_not_a_run_is_a_clear_error(tmp_path):
  from midpg_jax.errors import CheckpointError
  with pytest.raises(CheckpointError, match='not a training run'):
    midpg_jax.load_run(str(tmp_path))


def test_relative_prepared_dir_is_found_from_the_checkout_above_the_run(tmp_path, monkeypatch):
  import ml_collections
  from midpg_jax.api import find_prepared_dir
  config = ml_collections.ConfigDict({'data': {'name': 'aliccp', 'prepared_dir': ''}})
  prepared = tmp_path / 'checkout' / 'data_cache' / 'aliccp'
  prepared.mkdir(parents=True)
  (tmp_path / 'checkout' / 'runs' / 'x').mkdir(parents=True)
  monkeypatch.chdir(tmp_path)
  assert find_prepared_dir(config, str(tmp_path / 'checkout' / 'runs' / 'x')) is None
  (prepared / 'encoder.json').write_text('{}')
  assert find_prepared_dir(config, str(tmp_path / 'checkout' / 'runs' / 'x')) == str(prepared)
  config.data.name = 'synthetic'
  assert find_prepared_dir(config, str(tmp_path / 'checkout' / 'runs' / 'x')) is None


def test_export_of_a_real_data_run_scores_raw_rows_with_its_own_encoder(aliccp_run, run, tmp_path):
  pytest.importorskip('flatbuffers', reason='jax.export serialisation needs flatbuffers')
  from midpg_jax import export
  out = export.export_run(run, str(tmp_path / 'export'))
  served = export.load_exported(out)
  table = pacsv.read_csv(TEST_FILE)
  columns = {name: table.column(name).to_numpy() for name in table.column_names}
  np.testing.assert_allclose(served.predict(columns), aliccp_run[1], rtol=0, atol=2e-6)

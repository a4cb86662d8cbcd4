"""Issue 22, faults of the machine and of concurrent runs: a full disk, a read-only workdir, a
second trainer on one workdir, kill -9 during preparation, a config file that raises, a raw
Ali-CCP line whose feature_num lies. Each is one line naming what and where, and what was there
before is kept (docs/robustness.md). Serving inputs are in tests/test_serving_inputs.py."""

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, tiny_config
from midpg_jax import files, trainer
from midpg_jax.checkpoint import Checkpointer
from midpg_jax.data import load_dataset, store
from midpg_jax.errors import DataError, InUseError, StorageError
from test_aliccp_raw import copy_fixture, edit_line, read_raw
from test_datasets import aliccp_cfg, write_aliccp

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full(*args, **kwargs):
  raise ENOSPC


@contextlib.contextmanager
def read_only(path):
  """`path` unwritable for this process: permission bits, or for root (who ignores them) the
  immutable attribute."""
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    try:
      yield
    finally:
      os.chmod(path, 0o755)
    return
  if subprocess.run(['chattr', '+i', str(path)], capture_output=True).returncode:
    pytest.skip('running as root, which ignores permission bits, and chattr +i is not allowed')
  try:
    yield
  finally:
    subprocess.run(['chattr', '-i', str(path)], check=True)


def _entries(folder):
  return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------------------------
# files.py: the staging folders and the lock.


def test_a_cut_replacement_puts_the_previous_folder_back_and_cleans_up(tmp_path):
  """What kill -9 between replace_dir's two renames leaves (the old target beside, no target, the
  lock free): the next staging_dir of the target puts the old one back and removes the rest."""
  target = tmp_path / 'data'
  target.mkdir()
  (target / 'meta.json').write_text('old')
  stem = tmp_path / '.data.tmp-dead'
  (tmp_path / '.data.tmp-dead.lock').write_text('')  # its process is gone: nobody holds it
  stem.mkdir()
  (stem / 'meta.json').write_text('half')
  os.rename(target, str(stem) + '.old')
  with files.staging_dir(str(target)) as tmp:
    assert (target / 'meta.json').read_text() == 'old'
    mine = os.path.basename(tmp)
    assert _entries(tmp_path) == [mine, mine + '.lock', 'data']
    (tmp_path / mine / 'meta.json').write_text('new')
    files.replace_dir(tmp, str(target))
  assert _entries(tmp_path) == ['data'] and (target / 'meta.json').read_text() == 'new'


def test_write_text_keeps_the_previous_content_when_writing_fails(tmp_path, monkeypatch):
  path = tmp_path / 'config.json'
  files.write_text(str(path), 'before')
  monkeypatch.setattr(os, 'replace', _full)
  with pytest.raises(StorageError, match=r'^writing it: No space left on device$'):
    with files.storage_errors('writing it'):
      files.write_text(str(path), 'after')
  assert path.read_text() == 'before' and _entries(tmp_path) == ['config.json']


# ------------------------------------------------------------------------------------------------
# Preparation.


def test_disk_full_while_preparing_keeps_the_dataset_prepared_before(tmp_path, monkeypatch):
  write_aliccp(tmp_path / 'raw')
  cfg = aliccp_cfg(tmp_path)
  load_dataset(cfg)
  meta = open(os.path.join(cfg.prepared_dir, 'meta.json')).read()
  cfg.rebuild = True
  monkeypatch.setattr(store._NpyFile, 'write', _full)
  with pytest.raises(StorageError, match=rf'^preparing aliccp into {cfg.prepared_dir}: No space '
                     rf'left on device; {cfg.prepared_dir} is unchanged$'):
    load_dataset(cfg)
  assert open(os.path.join(cfg.prepared_dir, 'meta.json')).read() == meta
  assert _entries(os.path.dirname(cfg.prepared_dir)) == ['aliccp']  # no staging folder left


_KILLED_PREPARE = """
import sys, time
sys.path.insert(0, 'tests')
import pathlib
from midpg_jax.data import load_dataset, prepare
from test_datasets import aliccp_cfg

def stuck(*args, **kwargs):
  print('writing', flush=True)
  time.sleep(600)

prepare.write_pass = stuck
load_dataset(aliccp_cfg(pathlib.Path(sys.argv[1])))
"""


def test_a_preparation_killed_with_kill_9_is_cleaned_up_by_the_next(tmp_path):
  write_aliccp(tmp_path / 'raw')
  proc = subprocess.Popen([sys.executable, '-c', _KILLED_PREPARE, str(tmp_path)], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == 'writing'
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  parent = tmp_path / 'prepared'
  left = _entries(parent)
  assert len(left) == 2 and left[0].startswith('.aliccp.tmp-') and left[1] == left[0] + '.lock'
  ds = load_dataset(aliccp_cfg(tmp_path))
  assert _entries(parent) == ['aliccp'] and len(ds.splits['train']['label']) == 9


# ------------------------------------------------------------------------------------------------
# Training and evaluation.


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  """A run with a best checkpoint (5 steps of the tiny config)."""
  workdir = str(tmp_path_factory.mktemp('tiny') / 'run')
  assert trainer.train_and_evaluate(tiny_config(), workdir, stop_after_steps=5) == {
      'interrupted_at': 5}
  return workdir


_HOLD_LOCK = """
import sys, time
from midpg_jax import files
lock = files.lock(sys.argv[1], busy='held')
print('locked', flush=True)
time.sleep(600)
"""


def test_a_second_trainer_stops_at_once_and_kill_9_frees_the_workdir(tiny_run):
  lock_file = os.path.join(tiny_run, trainer.lock_name(0))
  metrics = open(os.path.join(tiny_run, 'metrics.jsonl')).read()
  holder = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, lock_file], stdout=subprocess.PIPE,
                            text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(InUseError, match=rf'^{tiny_run} is in use by another trainer: wait for it '
                       rf'to finish, or train into another --workdir \(held by pid {holder.pid} '
                       rf'on .*; lock file {lock_file}\)$'):
      trainer.train_and_evaluate(tiny_config(), tiny_run)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert open(os.path.join(tiny_run, 'metrics.jsonl')).read() == metrics  # nothing truncated
  files.lock(lock_file, busy='still held').release()  # the OS dropped the killed holder's lock


def test_disk_full_while_training_is_one_line_and_frees_the_workdir(tmp_path, monkeypatch):
  from midpg_jax.metrics_log import MetricsLog
  workdir = str(tmp_path / 'run')
  monkeypatch.setattr(MetricsLog, 'evaluation', _full)  # at the first evaluation (step 5)
  with pytest.raises(StorageError, match=rf'^training in {workdir}: No space left on device; what '
                     'the run saved before is kept: run the same command again to resume$'):
    trainer.train_and_evaluate(tiny_config(), workdir)
  json.load(open(os.path.join(workdir, 'config.json')))  # whole
  files.lock(os.path.join(workdir, trainer.lock_name(0)), busy='still held').release()


def test_orbax_reports_a_full_disk_as_a_storage_error(tmp_path, monkeypatch):
  """Orbax raises tensorstore's OS errors as ValueErrors with the errno in the text, from its
  background threads (the text as measured on a full tmpfs)."""
  import orbax.checkpoint as ocp
  checkpointer = Checkpointer(str(tmp_path))

  def save(*args, **kwargs):
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local file '
                     '"/x/0.orbax-checkpoint-tmp/": Failed to write 20340 bytes to file 26: No '
                     "space left on device [os_error_code='28']")

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  with pytest.raises(StorageError, match=rf'^writing checkpoints into {tmp_path}/checkpoints: No '
                     'space left on device; the checkpoints saved before are kept$'):
    checkpointer.save('latest', 1, {'a': np.zeros(2)}, {})
  checkpointer.close()


def test_closing_a_prefetch_waits_for_its_worker_to_drop_its_item():
  """A run ended by an error closes its prefetch: the worker thread must be gone (with the batch
  it held) before the interpreter shuts down, or freeing that batch's device arrays in a dying
  daemon thread aborts the process (measured: 4 of 6 full-tmpfs runs exited by SIGABRT)."""
  import threading
  import time
  from midpg_jax.stepping import prefetch
  producing = threading.Event()

  def slow():
    for i in range(100):
      producing.set()
      time.sleep(0.05)
      yield np.full(4, i)

  before = set(threading.enumerate())
  batches = prefetch(slow(), size=2)
  assert next(batches)[0] == 0
  producing.wait()
  batches.close()
  assert not [t for t in threading.enumerate() if t not in before], 'the worker outlived close'


def test_prefetch_raises_what_its_iterator_raised():
  from midpg_jax.stepping import prefetch

  def failing():
    yield 1
    raise StorageError('the disk')

  batches = prefetch(failing(), size=2)
  assert next(batches) == 1
  with pytest.raises(StorageError, match='^the disk$'):
    next(batches)


_TINY_CONFIG_FILE = f"""
import sys
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from conftest import tiny_config as get_config
"""


def test_a_full_tmpfs_while_training_is_one_line(tmp_path):
  """The real fault through the real command, where this machine lets the tests mount a 300 kB
  tmpfs: orbax meets it in its threads, or the metrics log does. (The background threads of
  tensorstore and tensorboardX print tracebacks of their own as they fail and at exit: not ours to
  silence; the command's own is one line.)"""
  mount = tmp_path / 'full'
  mount.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=300k', 'tmpfs', str(mount)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)')
  try:
    (tmp_path / 'tiny.py').write_text(_TINY_CONFIG_FILE)
    proc = _command('train.py', '--config', str(tmp_path / 'tiny.py'), '--workdir',
                    str(mount / 'run'))
    assert proc.returncode == 1, proc.stderr[-3000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(ours) == 1 and re.fullmatch(
        rf'error: (writing checkpoints into {mount}/run/checkpoints|training in {mount}/run): No '
        r'space left on device; .* kept.*', ours[0]), proc.stderr[-3000:]
    json.load(open(mount / 'run' / 'config.json'))
  finally:
    subprocess.run(['umount', str(mount)], check=True)


def _command(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=600)


def test_a_read_only_workdir_is_one_line_for_train_and_eval(tiny_run, tmp_path):
  workdir = tmp_path / 'run'
  subprocess.run(['cp', '-r', tiny_run, str(workdir)], check=True)
  os.remove(workdir / trainer.lock_name(0))
  before = _entries(workdir)
  with read_only(workdir):
    with pytest.raises(StorageError, match=rf'^training in {workdir}: {workdir}/train.lock: '
                       r'(Permission denied|Operation not permitted|Read-only file system); '):
      trainer.train_and_evaluate(tiny_config(), str(workdir))
    proc = _command('eval.py', '--workdir', str(workdir))
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert re.fullmatch(rf'error: writing {workdir}/eval_test.json: {workdir}: (Permission denied|'
                      r'Operation not permitted|Read-only file system)', proc.stderr.strip())
  assert _entries(workdir) == before


@pytest.mark.parametrize('code, message', [
    ('import no_such_module\n', r"ModuleNotFoundError: No module named 'no_such_module' "
     r'\(.*bad\.py, line 1\)'),
    ('def get_config():\n  raise ValueError("no dataset given")\n',
     r'ValueError: no dataset given \(.*bad\.py, line 2\)')])
def test_a_config_file_that_raises_is_one_line(tmp_path, code, message):
  (tmp_path / 'bad.py').write_text(code)
  proc = _command('train.py', '--config', str(tmp_path / 'bad.py'), '--workdir',
                  str(tmp_path / 'run'))
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
  assert proc.stderr.startswith(f'error: cannot load --config {tmp_path}/bad.py: ')
  assert re.search(message, proc.stderr), proc.stderr


# ------------------------------------------------------------------------------------------------
# The raw Ali-CCP release.


@pytest.mark.parametrize('file, line, text, message', [
    ('sample_skeleton_train.csv', 2,
     '2,1,0,3c59dc048e8850243be8079a5c74d079,3,301\x029100232\x031\x01205\x021002\x031',
     r'sample_skeleton_train\.csv, line 2: feature_num is 3 but the feature list has 2 items'),
    ('common_features_train.csv', 2,
     'b6d767d2f8ed5d21a44b0e5886680cb9,1,101\x0211002\x031\x01121\x025\x031',
     r'common_features_train\.csv, line 2: feature_num is 1 but the feature list has 2 items')])
def test_raw_aliccp_feature_num_must_count_the_items(tmp_path, file, line, text, message):
  raw = copy_fixture(tmp_path)
  edit_line(raw / file, line, text)
  with pytest.raises(DataError, match=message):
    read_raw(raw, 'train')

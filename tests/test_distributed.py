"""Training across devices and processes gives the single-device numbers.

The scenarios run in subprocesses (tests/distributed_worker.py): 8 fake CPU devices must be set
before JAX starts, and the two-process run needs one JAX runtime per process. This process keeps
its single device and restores the 8-device checkpoint itself.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # each test trains a run or starts processes

WORKER = os.path.join(ROOT, 'tests', 'distributed_worker.py')
TIMEOUT_S = 300
# float32; only the order of the reductions differs between meshes. Losses agree to 1e-5; params
# get an absolute 1e-5 (1 % of one learning-rate step): Adam's m / sqrt(v) turns rounding noise in
# a near-zero gradient into an update of up to ~lr, so a few entries move by ~1e-6.
RTOL, P_RTOL, P_ATOL = 1e-5, 1e-4, 1e-5


def _env(devices: int) -> dict:
  """This environment (with the suite's persistent compilation cache, tests/conftest.py: most of
  a cold run is compiling the same steps again in each process) less any distributed settings."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('JAX_COORDINATOR', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
                              'SLURM_', 'OMPI_', 'TPU_WORKER'))}
  env.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', JAX_PLATFORMS='cpu',
             PYTHONPATH=ROOT)
  return env


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
  if proc.returncode:
    raise AssertionError(f'{what} failed ({proc.returncode}):\n{proc.stdout[-4000:]}'
                         f'\n{proc.stderr[-8000:]}')


@pytest.fixture(scope='module')
def mesh_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('mesh')
  proc = subprocess.run([sys.executable, WORKER, 'mesh', '--out', str(out)], env=_env(8),
                        capture_output=True, text=True, timeout=TIMEOUT_S)
  _check(proc, 'the 8-device worker')
  print(proc.stdout)
  with open(out / 'mesh.json') as f:
    report = json.load(f)
  return out, report, dict(np.load(out / 'mesh.npz'))


def _assert_params_close(arrays, a, b):
  keys = sorted(k[len(a) + 1:] for k in arrays if k.startswith(a + '/'))
  assert keys and keys == sorted(k[len(b) + 1:] for k in arrays if k.startswith(b + '/'))
  for k in keys:
    np.testing.assert_allclose(arrays[f'{b}/{k}'], arrays[f'{a}/{k}'], rtol=P_RTOL, atol=P_ATOL,
                               err_msg=f'{a} vs {b}: {k}')


def test_4x2_mesh_trains_like_one_device_with_split_embedding_tables(mesh_run):
  _, report, arrays = mesh_run
  from distributed_worker import MORE_STEPS, TRAIN_STEPS
  assert report['init_equal']
  assert len(report['losses_1']) == len(report['losses_4x2']) == TRAIN_STEPS + MORE_STEPS
  np.testing.assert_allclose(report['losses_4x2'], report['losses_1'], rtol=RTOL)
  _assert_params_close(arrays, 'one', 'mesh')
  shards = report['shards_4x2']
  # (vocab, 8) tables split in 2 by rows on the model axis; vocab 5 does not divide: replicated.
  assert shards['embed_c0'] == [[1000, 8]] and shards['embed_c1'] == [[250, 8]]
  assert shards['embed_c7'] == [[5, 8]]
  line = next(l for l in report['layout_4x2'].splitlines() if 'embed_c7' in l)
  assert 'replicated: dimension 5 does not divide' in line, line
  # The optimizer moments follow their tables.
  opt = {k: v for k, v in report['opt_shards_4x2'].items() if k.endswith('embed_c0')}
  assert opt and all(v == [[1000, 8]] for v in opt.values()), report['opt_shards_4x2']


def test_checkpoint_from_8_devices_restores_on_1_and_2x4_and_trains_on_identically(mesh_run):
  _, report, arrays = mesh_run
  from distributed_worker import TRAIN_STEPS
  for name in ('1', '2x4'):
    assert report[f'restored_step_{name}'] == TRAIN_STEPS
    assert report[f'restored_sharding_ok_{name}'], name
    np.testing.assert_allclose(report[f'losses_resumed_{name}'],
                               report['losses_4x2'][TRAIN_STEPS:], rtol=RTOL)
    _assert_params_close(arrays, 'mesh', f'resumed_{name}')
  assert report['restored_shards_1']['embed_c0'] == [[2000, 8]]
  assert report['restored_shards_2x4']['embed_c0'] == [[500, 8]]  # 4-way model axis
  assert report['restored_shards_2x4']['embed_c4'] == [[50, 8]]  # 50 rows: replicated


def _assert_metrics_close(a: dict, b: dict, rtol=1e-5):
  assert a.keys() == b.keys()
  for group in a:
    for k, v in a[group].items():
      np.testing.assert_allclose(b[group][k], v, rtol=rtol, atol=1e-7, err_msg=f'{group}/{k}')


def test_evaluation_on_a_mesh_counts_every_row_once_and_matches_one_device(mesh_run):
  out, report, arrays = mesh_run
  from distributed_worker import mesh_config
  c = mesh_config()
  assert c.data.num_val % c.train.eval_batch_size  # a partial last batch
  assert report['eval_4x2']['overall']['count'] == c.data.num_val
  assert len(arrays['probs_4x2']) == c.data.num_val
  np.testing.assert_allclose(arrays['probs_4x2'], arrays['probs_1'], rtol=1e-5, atol=1e-7)
  _assert_metrics_close(report['eval_1'], report['eval_4x2'])
  # And in this single-device process, through eval.py's path, from the 8-device checkpoint.
  from midpg_jax import evaluation
  result, probs, _, meta = evaluation.evaluate_checkpoint(c, str(out / 'ckpt8'), 'validation',
                                                          kind='latest')
  assert meta['step_in_epoch'] == 4
  np.testing.assert_allclose(probs, arrays['probs_4x2'], rtol=1e-5, atol=1e-7)
  _assert_metrics_close(report['eval_4x2'], result)


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_together_like_one(mesh_run, tmp_path):
  _, report, _ = mesh_run
  port = _free_port()
  # Output to files, not pipes: a process blocked on a full pipe would stall the other one in a
  # collective.
  logs = [(open(tmp_path / f'stdout{i}.txt', 'w+'), open(tmp_path / f'stderr{i}.txt', 'w+'))
          for i in range(2)]
  procs = [subprocess.Popen([sys.executable, WORKER, 'process', '--out', str(tmp_path),
                             '--process_id', str(i), '--num_processes', '2', '--port', str(port)],
                            env=_env(2), stdout=out, stderr=err, text=True)
           for i, (out, err) in enumerate(logs)]
  try:
    for p in procs:
      p.wait(timeout=TIMEOUT_S)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  outputs = []
  for i, (p, (out, err)) in enumerate(zip(procs, logs)):
    out.seek(0)
    err.seek(0)
    outputs.append((out.read(), err.read()))
    out.close()
    err.close()
    _check(subprocess.CompletedProcess(p.args, p.returncode, *outputs[-1]), f'process {i}')
  results = [json.load(open(tmp_path / f'process{i}.json')) for i in range(2)]
  print('CPU seconds per phase, process 0 and 1:', [r['cpu_s'] for r in results])
  assert [r['data_shard'] for r in results] == [[0, 2], [1, 2]]
  assert results[0]['mesh'] == {'data': 2, 'model': 2}
  # Only process 0 logs and writes the metrics files.
  assert 'mesh {' in outputs[0][0] and 'mesh {' not in outputs[1][0]
  assert 'validation AUC' in outputs[0][0] and 'validation AUC' not in outputs[1][0]
  reference = report['reference']
  for r in results:
    s = r['summary']
    assert s['best_step'] == reference['best_step'] and s['steps'] == reference['steps']
    for split in ('validation', 'test'):
      assert s[split]['overall']['count'] == reference[split]['overall']['count']
      _assert_metrics_close(reference[split], s[split], rtol=1e-4)
  # The long run with prefetching finished on both processes (it used to hang in a collective).
  from distributed_worker import COLLECTIVE_STEPS, LONG_STEPS
  for r in results:
    assert r['collective_steps'] == COLLECTIVE_STEPS
    assert r['long_summary']['steps'] == LONG_STEPS, r['long_summary']
    assert r['long_summary']['test']['overall']['count'] == 256
  jsonl = [json.loads(line) for line in open(tmp_path / 'multiprocess' / 'metrics.jsonl')]
  assert [l['split'] for l in jsonl] == [l['split'] for l in report['reference_jsonl']]
  for mine, ref in zip(jsonl, report['reference_jsonl']):
    np.testing.assert_allclose(mine['train/loss'] if 'train/loss' in mine else 0.0,
                               ref.get('train/loss', 0.0), rtol=1e-5)


# Run in a fresh process: jax.distributed.initialize must come before JAX touches a device.
_AUTO_SCRIPT = '''
import os, jax
from midpg_jax import partitioning
assert partitioning.initialize_distributed('auto') is False  # no launcher: one process
os.environ.update(SLURM_JOB_ID='1', SLURM_STEP_NODELIST='localhost', SLURM_NTASKS='1',
                  SLURM_PROCID='0', SLURM_LOCALID='0', JAX_COORDINATOR_PORT=os.environ['PORT'])
assert partitioning.initialize_distributed('auto') is True  # JAX's own SLURM detection
assert jax.distributed.is_initialized() and jax.process_count() == 1
jax.distributed.shutdown()
print('ok')
'''


def test_auto_leaves_cluster_detection_to_jax(tmp_path):
  """'auto' with nothing given asks jax.distributed.initialize, whose cluster detection decides:
  nothing detected is one process, a (one-task, local) SLURM launch starts the runtime."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(_env(1), PORT=str(port))
  proc = subprocess.run([sys.executable, '-c', _AUTO_SCRIPT], env=env, capture_output=True,
                        text=True, timeout=TIMEOUT_S)
  _check(proc, 'the auto-detection script')
  assert proc.stdout.strip().endswith('ok')

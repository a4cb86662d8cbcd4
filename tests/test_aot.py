"""midpg-compile: a config's steps compiled for hardware that is not here, and what XLA says of
them per device. The TPU test needs compile-only libtpu (`make compile-env`) and skips without it;
the rest runs on host CPU devices."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest


COMMAND = os.path.join(os.path.dirname(sys.executable), 'midpg-compile')
SMALL = ['--config.data.vocab_sizes=(2000,500,200,100,50,20,10,5)', '--config.model.hidden=(32,16)',
         '--config.model.embed_dim=8']
HAS_LIBTPU = importlib.util.find_spec('libtpu') is not None


def _compile(tmp_path, *args):
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  return subprocess.run([COMMAND, *SMALL,  # the packaged default config
                         *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_host_devices_report_per_device_numbers(tmp_path):
  out = tmp_path / 'r.json'
  proc = _compile(tmp_path, '--topology', 'cpu:8', '--per_chip_batch', '512', '--json', str(out))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "midpg (float32) on cpu:8: 8 x cpu, 1 host(s), mesh {'data': 8, 'model': 1}" in proc.stdout
  for line in ('train step, global batch 4,096 (512 rows per device), per device:',
               'predict step, global batch 4,096 (512 rows per device), per device:', 'FLOPs',
               'bytes accessed', 'memory           argument', 'collectives      all-reduce'):
    assert line in proc.stdout
  assert 'WARNING' not in proc.stdout
  report = json.loads(out.read_text())
  train, predict = report['steps']['train'], report['steps']['predict']
  assert train['batch_all_gathers'] == [] and predict['batch_all_gathers'] == []
  assert set(train['collectives']) == {'all-reduce'}  # the gradients; predict needs none
  assert predict['collectives'] == {}
  assert train['cost']['flops'] > 2 * predict['cost']['flops'] > 0
  assert 'roofline' not in train  # a host CPU has no published peak


@pytest.mark.parametrize('args,message', [
    (['--topology', 'v7z:4x4'], "error: unknown --topology 'v7z:4x4': use a TPU slice"),
    (['--topology', 'v5e:4x4x4'], "error: --topology 'v5e:4x4x4': v5e slices have 2 dimensions"),
    (['--topology', 'cpu:4', '--batch_size', '1001'],
     'error: the train batch of 1001 rows does not divide by the 4 devices of the mesh data axis'),
])
def test_a_mistake_is_one_line(tmp_path, args, message):
  proc = _compile(tmp_path, *args)
  assert proc.returncode == 1
  assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(message), \
      proc.stderr[-2000:]


@pytest.mark.skipif(HAS_LIBTPU, reason='libtpu is installed here')
def test_missing_libtpu_is_one_line(tmp_path):
  proc = _compile(tmp_path, '--topology', 'v5e:2x2')
  assert proc.returncode == 1
  assert proc.stderr.strip() == ('error: compiling for this target needs libtpu, which is not '
                                 'installed: pip install "midpg-jax[tpu]"')


@pytest.mark.skipif(not HAS_LIBTPU, reason='needs compile-only libtpu: make compile-env, then '
                    'run this file with .venv-compile/bin/python -m pytest')
def test_tpu_slice_is_data_parallel_and_midpg_costs_about_its_backbone():
  """On a v5e:2x2 slice at 4,096 rows per chip (the default model's sizes)."""
  import jax
  jax.config.update('jax_platforms', 'cpu')
  from midpg_jax import config
  from midpg_jax.aot import targets
  from midpg_jax.aot.report import report
  flops = {}
  for name, path in (('mlp', 'auto'), ('midpg', 'tiled'), ('midpg', 'auto')):
    c = config.get_config()
    c.model.name, c.model.scenario_matmul = name, path
    r = report(targets.parse('v5e:2x2'), c, per_chip_batch=4096, steps=('train',))
    train = r['steps']['train']
    assert train['batch_all_gathers'] == [], name
    assert set(train['collectives']) == {'all-reduce'}, name
    flops[name, path] = train['cost']['flops']
  assert flops['midpg', 'tiled'] < 1.5 * flops['mlp', 'auto']
  # 'auto' is the one-hot path on TPUs (4 scenarios: S times the FLOPs, fewer bytes moved).
  assert 3.5 < flops['midpg', 'auto'] / flops['mlp', 'auto'] < 4.5


def test_readme_table_is_the_scaling_scripts():
  """The README's v5e:4x4 table is rows of docs/scaling.md's (both from scripts/scaling_tables.py,
  not edited by hand), and shows MI-DPG's per-chip FLOPs near its backbone's on the 'tiled' path
  and every chip computing its own rows (no collective but the gradients' all-reduce)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  lines = open(os.path.join(root, 'README.md')).read().split('\n')
  at = lines.index('<!-- the table below is written by scripts/scaling_tables.py -->') + 1
  table = []
  while lines[at].startswith('|'):
    table.append(lines[at])
    at += 1
  scaling = open(os.path.join(root, 'docs', 'scaling.md')).read().split('\n')
  assert len(table) > 3 and all(row in scaling for row in table)
  cells = {tuple(c.strip() for c in row.strip('|').split('|')[:3]): row.strip('|').split('|')
           for row in table[2:]}
  assert float(cells['midpg', 'tiled', 'float32'][4]) < 2.5  # x mlp
  assert all(c[7].strip() == 'none' for c in cells.values())  # other collectives

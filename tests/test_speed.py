"""The speed benchmark (`python -m midpg_jax.speed`) runs its sections end to end on tiny sizes;
speed numbers themselves are never asserted (they belong to the benchmark's report)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TINY_CONFIG = '''
from configs.default import get_config as _default


def get_config():
  c = _default()
  c.data.vocab_sizes = (1000, 200, 50, 20, 10, 10, 10, 10)
  c.model.hidden = (16, 8)
  return c
'''


def _speed(tmp_path, *args, timeout=900):
  config = tmp_path / 'tiny.py'
  config.write_text(TINY_CONFIG)
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', 'midpg_jax.speed', '--config', str(config),
                         '--out', str(tmp_path / 'out'), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_gpu_suite_dry_run_walks_every_path_on_cpu(tmp_path):
  pytest.importorskip('torch')
  proc = _speed(tmp_path, '--suite', 'gpu', '--dry-run', '--models', 'shared_bottom',
                '--no-compile')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'out' / 'speed.json') as f:
    results = json.load(f)
  assert results['suite']['dtypes'] == ['f32', 'bf16'] and results['suite']['dry_run']
  for dtype in ('f32', 'bf16'):
    assert set(results['matmul_by_dtype'][dtype]) >= {'jax', 'torch'}
    entries = results[f'suite_{dtype}']['128']['shared_bottom']
    assert set(entries) == {'jax', 'torch_eager_subset', 'ratios'}
    assert entries['jax']['dtype'] == dtype
    # On a CPU: XLA's plan of the step is there, device peaks are not (no such counter).
    assert entries['jax']['memory']['xla_train_step']['total_mb'] > 0
    assert 'jax_process_device_peak_mb' not in entries['jax']['memory']
    assert entries['torch_eager_subset']['memory'] == {}
    assert entries['ratios']['jax_speedup_vs_torch_eager'] > 0
  md = (tmp_path / 'out' / 'speed.md').read_text()
  assert '### bf16 (dry run' in md and 'dtype f32 and bf16' in md


def test_gpu_suite_on_cpu_without_dry_run_is_refused(tmp_path):
  proc = _speed(tmp_path, '--suite', 'gpu', '--models', 'shared_bottom')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      '--suite gpu: the JAX backend is cpu, not an accelerator')


def test_dtype_reaches_the_model_config():
  from configs.default import get_config
  from midpg_jax.speed.jax_side import JaxContender
  config = get_config()
  contender = JaxContender('x', config, dtype='bf16')
  assert contender.config.model.dtype == 'bfloat16'
  assert config.model.dtype == 'float32'  # the contender's copy, not the caller's config


def test_profile_classes_the_ops_of_a_train_step_by_kind_and_phase():
  import jax
  import jax.numpy as jnp
  from midpg_jax.speed.profile import (classify, hlo_instructions, matmul_flops, phase,
                                       trace_ops)

  def train_step(params, ids):  # embedding lookup -> matmul -> loss; SGD
    def loss(p):
      return jnp.sum(jnp.tanh(jnp.take(p['table'], ids, axis=0) @ p['w']) ** 2)
    grads = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

  params = {'table': jnp.ones((1000, 32)), 'w': jnp.ones((32, 64))}
  ids = jnp.arange(256) % 1000
  compiled = jax.jit(train_step).lower(params, ids).compile()
  instructions = hlo_instructions(compiled.as_text())
  # Forward, input- and weight-gradient matmuls: each 2 x 256 x 32 x 64 FLOPs, from HLO shapes.
  assert set(matmul_flops(compiled.as_text()).values()) == {2 * 256 * 32 * 64}
  kinds = {(classify(op), phase(op)) for op in instructions.values()}
  assert ('matmul', 'forward') in kinds and ('matmul', 'backward') in kinds
  assert any(k == 'gather (embedding lookup)' for k, _ in kinds)
  assert any(k == 'scatter (embedding gradients)' for k, _ in kinds)
  per_op, wall_us = trace_ops(lambda: compiled(params, ids)['w'].block_until_ready(), 2)
  assert per_op and wall_us > 0
  assert set(per_op) <= set(instructions)  # every traced op is found in the HLO

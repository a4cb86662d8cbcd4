"""The speed benchmark (`python -m benchmarks.speed`) runs its sections end to end on tiny sizes;
speed numbers themselves are never asserted (they belong to the benchmark's report)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TINY_CONFIG = '''
from midpg_jax.config import get_config as _default


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
  return subprocess.run([sys.executable, '-m', 'benchmarks.speed', '--config', str(config),
                         '--out', str(tmp_path / 'out'), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.torch
@pytest.mark.slow
def test_gpu_suite_dry_run_walks_every_path_on_cpu(tmp_path):
  proc = _speed(tmp_path, '--suite', 'gpu', '--dry_run', '--models', 'shared_bottom',
                '--no_compile')
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


@pytest.mark.slow
def test_gpu_suite_on_cpu_without_dry_run_is_refused(tmp_path):
  proc = _speed(tmp_path, '--suite', 'gpu', '--models', 'shared_bottom')
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith(
      '--suite gpu: the JAX backend is cpu, not an accelerator')


def test_dtype_reaches_the_model_config():
  from midpg_jax.config import get_config
  from benchmarks.speed.jax_side import JaxContender
  config = get_config()
  contender = JaxContender('x', config, dtype='bf16')
  assert contender.config.model.dtype == 'bfloat16'
  assert config.model.dtype == 'float32'  # the contender's copy, not the caller's config


def test_profile_classes_the_ops_of_a_train_step_by_kind_and_phase():
  import jax
  import jax.numpy as jnp
  from benchmarks.speed.profile import (classify, hlo_instructions, matmul_flops, phase,
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


def _jaxpr_flops(name, hidden, **block):
  """Forward matmul FLOPs per example of `name` (nothing compiled), and the spec's input width."""
  import jax
  from midpg_jax.config import get_config
  from midpg_jax.data import load_dataset, pipeline
  from midpg_jax.models import build_model
  from benchmarks.speed.flops import model_forward_flops
  from midpg_jax.train_state import init_variables, model_inputs
  c = get_config()
  c.data.num_train, c.data.num_val, c.data.num_test = 64, 32, 32
  c.model.name, c.model.hidden = name, hidden
  if block:
    c.model[name].update(block)
  ds = load_dataset(c.data)
  batch = model_inputs(next(iter(pipeline.train_batches(ds.splits['train'], 32, 0, 0))))
  model = build_model(c.model, ds.spec)
  variables = jax.eval_shape(lambda k: init_variables(model, batch, k), jax.random.key(0))
  d0 = (len(ds.spec.cat_names) + len(ds.spec.multi_names)) * c.model.embed_dim \
      + ds.spec.num_dense
  return model_forward_flops(c.model, ds.spec, batch, variables), d0, ds.spec.num_scenarios


def test_zoo_table_flops_count_each_row_once_with_its_own_scenario_weights():
  """The zoo table's FLOPs per example, read from the jaxpr: Shared-Bottom's towers count one
  scenario's weights per row (not S, not the tiles' padding); MMoE's K experts count K times."""
  sb, d0, _ = _jaxpr_flops('shared_bottom', (16, 8))
  assert sb == 2 * (d0 * 16 + 16 * 8 + 8)
  mmoe, d0, S = _jaxpr_flops('mmoe', (16, 8), num_experts=3)
  # experts, the gate, tower, output (the mix of the experts is an elementwise product summed
  # over the experts, not a matmul: not counted)
  assert mmoe == 2 * (3 * d0 * 16 + d0 * 3 + 16 * 8 + 8)


def test_zoo_table_flags_models_slow_for_their_flops():
  from benchmarks.speed.zoo_table import zoo_table_markdown
  row = lambda ms, step, flops: {  # noqa: E731
      'train_step': {'median_ms': ms, 'p25_ms': ms, 'p75_ms': ms}, 'step_vs_shared_bottom': step,
      'forward_flops_per_example': 1.0, 'flops_vs_shared_bottom': flops,
      'xla_train_flops_per_example': None, 'slowdown_vs_flops': step / flops,
      'train_gflops': 1.0, 'fraction_of_matmul': 0.5}
  md = zoo_table_markdown({'batch_size': 8, 'matmul_n': 4, 'matmul_gflops': 2.0, 'models': {
      'shared_bottom': row(10, 1, 1), 'cheap': row(20, 2, 2), 'heavy': row(50, 5, 4),
      'slow': row(25, 2.5, 1)}})
  cells = [line.split('|')[1].split() for line in md.splitlines()
           if line.startswith('| ') and not line.startswith('| model')]
  flags = {c[0]: ''.join(c[1:]) for c in cells}
  assert flags == {'shared_bottom': '', 'cheap': '', 'heavy': '*', 'slow': '**'}

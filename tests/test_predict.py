"""midpg-predict's scoring (midpg_jax/predict.py): model calls on one scenario's rows each (the
internal 'one_scenario' path) give every row the score of the model's own mixed-batch path, in
the input's row order; and the entry points' XLA flags never override a user's own.
(The end-to-end CLI tests on a trained Ali-CCP run are in tests/test_api.py.)"""

import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from conftest import run_compiled, small_config
from midpg_jax import predict, xla_defaults
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models import build_model
from midpg_jax.train_state import create_train_state, make_optimizer, make_predict_step

SPEC = FeatureSpec(cat_names=('user', 'item'), cat_vocab_sizes=(50, 30), dense_names=('d0',),
                   scenario_names=('a', 'b', 'c'), multi_names=('tags',), multi_vocab_sizes=(20,),
                   multi_max_lens=(3,))


def _columns(n, seed, scenarios=(0, 1, 2)):
  rng = np.random.default_rng(seed)
  return {'cat': rng.integers(0, 30, (n, 2)).astype(np.int32),
          'dense': rng.normal(size=(n, 1)).astype(np.float32),
          'scenario': rng.choice(scenarios, n).astype(np.int32),
          'multi': {'tags': rng.integers(0, 20, (n, 3)).astype(np.int32)}}


def _fake_run(name):
  """A run-like object (model, state, spec) with every parameter moved off its initial value, so
  the scenarios' weights differ (MI-DPG's start at M = 0: all equal)."""
  c = small_config()
  cfg = c.model.copy_and_resolve_references()
  cfg.name, cfg.hidden, cfg.embed_dim = name, (16, 8), 4
  model = build_model(cfg, SPEC)
  sample = {**_columns(8, 0), 'label': np.zeros(8, np.float32), 'weight': np.ones(8, np.float32)}
  # One compile for the whole initialisation (op by op, each op would compile on its own).
  tx = make_optimizer(c.train, total_steps=1)
  state = run_compiled(lambda k: create_train_state(model, tx, sample, k), jax.random.key(0))
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda x: np.asarray(x) + 0.3 * rng.normal(size=x.shape).astype(np.float32), state.params)
  return types.SimpleNamespace(model=model, state=state.replace(params=params, opt_state=None),
                               spec=SPEC)


# MI-DPG (the default model) and a zoo model that reads the rows' scenarios beyond the matmuls
# (STAR's partitioned normalisation).
@pytest.mark.parametrize('name', ['midpg', 'star'])
def test_one_scenario_calls_score_every_row_as_the_mixed_batch_does(name):
  run = _fake_run(name)
  mixed = jax.jit(make_predict_step(run.model))  # the model's own path ('auto' = 'tiled')
  # batch_size 8: full calls of 8 rows and quarter-batch calls of 2 (the last one padded);
  # no row of scenario 1, so it gets no call.
  scorer = predict.GroupedScorer(run, batch_size=8)
  columns = _columns(37, 2, scenarios=(0, 2))
  probs = scorer.collect(scorer.dispatch(columns))
  expected = np.asarray(mixed(run.state, columns))
  assert probs.shape == (37,) and np.std(probs) > 0
  np.testing.assert_allclose(probs, expected, rtol=2e-6, atol=1e-7)
  # The scenarios' weights differ, so scoring a row with another scenario's would show.
  as_scenario_0 = np.asarray(mixed(run.state, dict(columns, scenario=np.zeros(37, np.int32))))
  assert not np.allclose(probs, as_scenario_0, rtol=1e-3)
  # One scenario per call, every row exactly once.
  calls = scorer._calls(columns['scenario'])
  assert all(len(set(columns['scenario'][rows])) == 1 and len(rows) in (8, 2) for rows in calls)
  assert sorted(set(np.concatenate(calls).tolist())) == list(range(37))


def test_xla_flags_are_added_unless_the_user_sets_them(monkeypatch):
  flag = xla_defaults.DEFAULT_FLAGS[0]
  assert xla_defaults.with_xla_flags([flag], '') == flag
  assert xla_defaults.with_xla_flags('', '') == ''
  assert xla_defaults.with_xla_flags([flag], '--xla_force_host_platform_device_count=2') == (
      '--xla_force_host_platform_device_count=2 ' + flag)
  mine = '--xla_cpu_experimental_ynn_fusion_type=dot'
  assert xla_defaults.with_xla_flags([flag], mine) == mine  # the user's value wins
  # apply(): into the environment, unless opted out.
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=1')
  monkeypatch.setenv(xla_defaults.OPT_OUT, '0')
  xla_defaults.apply()
  assert os.environ['XLA_FLAGS'] == '--xla_force_host_platform_device_count=1'
  monkeypatch.delenv(xla_defaults.OPT_OUT)
  xla_defaults.apply()
  assert os.environ['XLA_FLAGS'] == '--xla_force_host_platform_device_count=1 ' + flag


def test_the_tests_run_with_the_package_xla_flags():
  """The conftest sets the package's flags before JAX starts, as every entry point does, so the
  tests' backend runs with the defaults unless the environment said otherwise."""
  if os.environ.get(xla_defaults.OPT_OUT) == '0':
    pytest.skip(f'{xla_defaults.OPT_OUT}=0 in this environment')
  assert xla_defaults.DEFAULT_FLAGS[0].split('=')[0] in os.environ.get('XLA_FLAGS', '')


def test_the_entry_points_set_the_xla_flags_and_importing_the_package_does_not():
  """`import midpg_jax` leaves XLA_FLAGS as the caller had it; a command (`cli.run`, which every
  midpg-* command, train.py and eval.py go through) adds the defaults and keeps the caller's."""
  code = ('import os, midpg_jax, midpg_jax.api, midpg_jax.predict, midpg_jax.export\n'
          'print(os.environ["XLA_FLAGS"])\n'
          'from midpg_jax import cli\n'
          'cli.run(lambda argv: print(os.environ["XLA_FLAGS"]))\n')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  env.pop(xla_defaults.OPT_OUT, None)
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.splitlines() == ['--xla_force_host_platform_device_count=1',
                                      '--xla_force_host_platform_device_count=1 '
                                      + xla_defaults.DEFAULT_FLAGS[0]]

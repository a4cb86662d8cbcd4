"""The serving export: the artefact scores like the live model, at any batch size, in a fresh
process that never imports the training code."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import perturbed, run_compiled, small_config
from midpg_jax import api, export
from midpg_jax.checkpoint import Checkpointer
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.models import build_model
from midpg_jax.train_state import create_train_state, make_optimizer

pytest.importorskip('flatbuffers', reason='jax.export serialisation needs flatbuffers '
                    '(requirements.txt)')

# A multi-valued field too, so the export's `multi` inputs are exercised.
SPEC = FeatureSpec(cat_names=('user', 'item', 'shop'), cat_vocab_sizes=(50, 40, 7),
                   dense_names=('price', 'age'), scenario_names=('a', 'b', 'c'),
                   multi_names=('tags',), multi_vocab_sizes=(30,), multi_max_lens=(4,))


def write_run(workdir, model_name: str) -> None:
  """A run folder as train.py leaves it, with random (not initial) parameters in the best
  checkpoint: zero-initialised factors would hide a path that ignores them."""
  config = small_config()
  config.model.name = model_name
  model = build_model(config.model, SPEC)
  tx = make_optimizer(config.train, 1)
  columns = api.example_columns(SPEC, 2)
  # Jitted: op by op, the init compiles one program per primitive and parameter shape.
  state = run_compiled(lambda k: create_train_state(model, tx, columns, k), jax.random.key(0))
  state = state.replace(params=perturbed(state.params, scale=0.3, seed=1), step=state.step + 7)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=1))
  with open(os.path.join(workdir, 'feature_spec.json'), 'w') as f:
    f.write(SPEC.to_json())
  checkpointer = Checkpointer(str(workdir))
  checkpointer.save('best', 7, state, {'best_step': 7})
  checkpointer.wait()
  checkpointer.close()


def random_rows(n: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {'cat': np.stack([rng.integers(0, v, n) for v in SPEC.cat_vocab_sizes], 1).astype(np.int32),
          'dense': rng.normal(size=(n, SPEC.num_dense)).astype(np.float32),
          'scenario': rng.integers(0, SPEC.num_scenarios, n).astype(np.int32),
          'multi': {'tags': rng.integers(0, 30, (n, 4)).astype(np.int32)}}


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """model name -> (live run, export folder), written, loaded and exported once per model: the
  fresh-process test scores the same STAR export as the batch-size test."""
  def make(model_name: str):
    folder = tmp_path_factory.mktemp(model_name)
    write_run(folder / 'run', model_name)
    run = api.load_run(str(folder / 'run'))
    return run, export.export_run(run, str(folder / 'export'))
  return functools.lru_cache(maxsize=None)(make)


@pytest.mark.parametrize('model_name', ['midpg', 'star', 'mmoe'])
def test_exported_model_equals_live_model_at_any_batch_size(exported, model_name):
  run, out = exported(model_name)
  rows = random_rows(1000)
  live = run.predict(rows)
  served = export.load_exported(out)
  np.testing.assert_allclose(served.predict_columns(rows), live, rtol=0, atol=2e-6)
  assert np.std(live) > 0.01  # the rows are told apart: the comparison is not of constants
  one = {k: (v[3:4] if k != 'multi' else {'tags': v['tags'][3:4]}) for k, v in rows.items()}
  np.testing.assert_allclose(served.predict_columns(one), live[3:4], rtol=0, atol=2e-6)
  stamp = json.load(open(os.path.join(out, 'export.json')))
  assert stamp['model'] == model_name and stamp['step'] == 7 and stamp['format_version'] == 1


_FRESH = """
import json, sys
import numpy as np
from midpg_jax.export import load_exported
rows = dict(np.load(sys.argv[2]))
rows['multi'] = {'tags': rows.pop('tags')}
probs = load_exported(sys.argv[1]).predict_columns(rows)
heavy = sorted(m for m in ('flax', 'optax', 'orbax', 'ml_collections', 'midpg_jax.models',
                           'midpg_jax.trainer', 'midpg_jax.data') if m in sys.modules)
print(json.dumps({'probs': probs.tolist(), 'imported': heavy}))
"""


def test_export_loads_in_a_fresh_process_without_the_training_code(exported, tmp_path):
  run, out = exported('star')  # STAR also has normalisation statistics (model_state)
  rows = random_rows(300, seed=1)
  live = run.predict(rows)
  np.savez(tmp_path / 'rows.npz', cat=rows['cat'], dense=rows['dense'],
           scenario=rows['scenario'], tags=rows['multi']['tags'])
  result = subprocess.run([sys.executable, '-c', _FRESH, out, str(tmp_path / 'rows.npz')],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  fresh = json.loads(result.stdout.strip().splitlines()[-1])
  assert fresh['imported'] == []
  np.testing.assert_allclose(np.asarray(fresh['probs'], np.float32), live, rtol=0, atol=2e-6)


def test_not_an_export_is_a_clear_error(tmp_path):
  from midpg_jax.errors import CheckpointError
  with pytest.raises(CheckpointError, match='not a midpg-jax export'):
    export.load_exported(str(tmp_path))

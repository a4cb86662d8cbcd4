"""One scenario path for every model: 'tiled', 'ragged', 'onehot' and 'masked' (and 'auto') give
the same training-mode logits (partitioned-norm batch moments included), the same running
statistics and the same gradients for every model with per-scenario weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import perturbed, run_compiled, small_config
from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import build_model
from midpg_jax.models.scenario_ops import (SCENARIO_MATMULS, make_routing, resolve_path,
                                           tile_layout, tile_rows)
from midpg_jax.train_state import model_inputs

SCENARIO_MODELS = ('midpg', 'shared_bottom', 'mmoe', 'ple', 'hmoe', 'star', 'sar_net', 'm2m',
                   'hamur', 'apg')


@pytest.fixture(scope='module')
def data():
  c = small_config(num_train=2_000, num_val=500, num_test=500)
  ds = load_dataset(c.data)
  batch = model_inputs(next(pipeline.eval_batches(ds.splits['train'], 200)))
  return c, ds, batch


def _config(c, name, path):
  cfg = c.model.copy_and_resolve_references()
  cfg.name, cfg.scenario_matmul, cfg.hidden = name, path, (16, 8)
  cfg.num_experts, cfg.scenario_embed_dim, cfg.m2m_attention_dim, cfg.hamur_rank = 2, 4, 4, 2
  return cfg


def _outputs_and_grads(models, variables, batch):
  """{path: (training logits, new model state (partitioned-norm running moments), gradient of a
  weighted sum of the training logits)} for every model of `models` ({path: model}), all paths
  compiled as one program: one compilation instead of one per path (measured for MI-DPG: 10.2
  CPU-s against 15.7)."""
  state = {k: v for k, v in variables.items() if k != 'params'}

  def one_path(model, variables, batch):
    def train_logits(params):
      out, new_state = model.apply({'params': params, **state}, batch, train=True,
                                   mutable=list(state))
      return jnp.sum(out['logits'] * jnp.arange(1, 1 + out['logits'].shape[0])), (out, new_state)

    grads, (out, new_state) = jax.grad(train_logits, has_aux=True)(variables['params'])
    return out['logits'], new_state, grads

  return run_compiled(
      lambda v, b: {path: one_path(model, v, b) for path, model in models.items()},
      variables, batch)


@pytest.mark.parametrize('name', SCENARIO_MODELS)
def test_every_path_gives_the_same_outputs_and_gradients(data, name):
  c, ds, batch = data
  paths = [p for p in SCENARIO_MATMULS if p != 'auto']
  models = {p: build_model(_config(c, name, p), ds.spec) for p in paths}
  # Every parameter moved off its initial value, so no per-scenario weight is still shared.
  variables = perturbed(run_compiled(models['onehot'].init, jax.random.key(0), batch))
  results = _outputs_and_grads(models, variables, batch)
  want = results['onehot']
  for path in [p for p in paths if p != 'onehot']:  # onehot is the reference
    got = results[path]
    # float32 sums in another order: the tolerance is relative to the largest entry of the
    # output (logits / state / gradients), since some gradients are exactly 0 in exact arithmetic
    # and float32 noise in any order (HAMUR's adapter bias feeds a per-scenario mean subtraction).
    for g, w, part in zip(got, want, ('logits', 'state', 'gradients')):
      assert jax.tree.structure(g) == jax.tree.structure(w), f'{name} {path} {part}'
      if not jax.tree.leaves(w):  # no running state (only STAR and HAMUR keep statistics)
        continue
      scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(w))
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-3, atol=1e-4 * scale, err_msg=f'{name} {path} {part}'), g, w)


@pytest.mark.parametrize('batch_size,num_scenarios', [(4096, 4), (4096, 16), (4096, 64),
                                                      (256, 30), (1024, 4)])
def test_tiles_shrink_with_many_scenarios_so_padding_stays_small(batch_size, num_scenarios):
  """Padding is < S T rows; the tile size keeps it under B / 4 (up to the 8-row floor)."""
  tile = tile_rows(batch_size, num_scenarios)
  assert num_scenarios * tile <= max(batch_size // 4, 8 * num_scenarios)
  scenario = jnp.asarray(np.random.default_rng(0).integers(0, num_scenarios, batch_size))
  layout = tile_layout(scenario, num_scenarios, tile)
  np.testing.assert_array_equal(layout.rows[layout.position], np.arange(batch_size))
  assert int(layout.valid.sum()) == batch_size
  own = np.repeat(np.asarray(layout.tile_scenario), tile)[np.asarray(layout.position)]
  np.testing.assert_array_equal(own, scenario)


def test_auto_resolves_to_a_concrete_path_and_symbolic_batches_to_onehot():
  assert resolve_path('auto', 4096, 4) in SCENARIO_MATMULS[1:]
  assert resolve_path('tiled', None, 4) == 'onehot'
  assert make_routing(jnp.zeros((8,), jnp.int32), 4, 'auto').method == resolve_path('auto', 8, 4)

"""One scenario path for every model: 'tiled', 'ragged', 'onehot' and 'masked' (and 'auto') give
the same training-mode logits (partitioned-norm batch moments included), the same running
statistics and the same gradients for every model with per-scenario weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_subset, perturbed, run_compiled, small_config
from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import build_model
from midpg_jax.models.scenario_ops import (SCENARIO_MATMULS, ParallelMLP, make_routing,
                                           per_row, resolve_path, tile_layout, tile_rows)
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


@pytest.mark.parametrize('name', fast_subset(SCENARIO_MODELS, ('midpg', 'shared_bottom', 'star')))
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
  # By platform (docs/scaling.md): TPUs take the one-hot path up to 32 scenarios.
  assert [resolve_path('auto', 4096, s, p) for s, p in ((4, 'cpu'), (4, 'gpu'), (4, 'tpu'),
                                                        (32, 'tpu'), (33, 'tpu'))] == [
      'tiled', 'tiled', 'onehot', 'onehot', 'tiled']
  assert resolve_path('masked', 4096, 4, 'tpu') == 'masked'
  assert resolve_path('tiled', None, 4) == 'onehot'
  assert make_routing(jnp.zeros((8,), jnp.int32), 4, 'auto').method == resolve_path('auto', 8, 4)


@pytest.mark.parametrize('shared_input', [True, False])
def test_parallel_mlp_expert_major_equals_each_expert_on_its_own(shared_input):
  """ParallelMLP computes expert-major (K, B, w) for speed; it must equal each expert's plain MLP
  (its own kernel slices, batch-major), forward and gradients (parameters and input)."""
  num, widths, batch, d = 3, (5, 4), 6, 7
  mlp = ParallelMLP(num, widths)
  shape = (batch, d) if shared_input else (num, batch, d)
  x = jax.random.normal(jax.random.key(1), shape)
  params = perturbed(mlp.init(jax.random.key(0), x))['params']

  def each_expert(params, x):  # (K, B, w): expert k's MLP on its input, one at a time
    outs = []
    for k in range(num):
      h = x if shared_input else x[k]
      for i in range(len(widths)):
        h = jax.nn.relu(h @ params[f'kernel_{i}'][k] + params[f'bias_{i}'][k])
      outs.append(h)
    return jnp.stack(outs)

  weights = jax.random.normal(jax.random.key(2), (num, batch, widths[-1]))
  loss = lambda f: lambda p, x: jnp.sum(weights * f(p, x))  # noqa: E731
  got = mlp.apply({'params': params}, x)
  np.testing.assert_allclose(got, each_expert(params, x), rtol=1e-5, atol=1e-6)
  got_grads = jax.grad(loss(lambda p, x: mlp.apply({'params': p}, x)), argnums=(0, 1))(params, x)
  want_grads = jax.grad(loss(each_expert), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               got_grads, want_grads)


def test_tiled_per_row_and_scenario_sum_equal_plain_lookups_and_segment_sums():
  """'tiled' looks tables up once per tile and sums per tile first (for speed); per row and per
  scenario it must equal the plain gather / segment sum over the batch rows (padding excluded)."""
  num_scen, batch, d = 5, 300, 3
  rng = np.random.default_rng(0)
  scenario = jnp.asarray(rng.integers(0, num_scen - 1, batch))  # scenario 4 absent
  table = jnp.asarray(rng.standard_normal((num_scen, d)), jnp.float32)
  x = jnp.asarray(rng.standard_normal((batch, d)), jnp.float32)
  routing = make_routing(scenario, num_scen, 'tiled')
  assert routing.layout.tile > 1 and routing.layout.rows.shape[0] > batch  # real tiles, padding
  np.testing.assert_array_equal(routing.restore(per_row(table, routing, 2)), table[scenario])
  in_order = routing.take_batch({'dense': x})['dense'] * routing.valid(x.dtype)[:, None]
  np.testing.assert_allclose(routing.scenario_sum(in_order),
                             jax.ops.segment_sum(x, scenario, num_scen), rtol=1e-5, atol=1e-5)

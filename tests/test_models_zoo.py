"""The multi-scenario model zoo: shapes, learning beyond a scenario-blind baseline, mechanisms.

Each zoo model is trained once (module-scoped cache) on small synthetic data whose scenarios differ
(heterogeneity 1.0): initialisation, a few hundred train steps and the validation prediction run
as one jitted function, so each model costs one compilation. The tests are compile-bound on CPU, so
everything is compiled without XLA's backend optimisations (`compiled`), which more than halves
compile time and changes no result.
"""

import functools
import re

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_subset, jaxpr_shapes, small_config
from midpg_jax import metrics
from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import build_model, mi_weight, model_names
from midpg_jax.models.apg import merge_overparam
from midpg_jax.train_state import (count_params, create_train_state, make_optimizer,
                                   make_train_step, model_inputs)

ZOO = ('shared_bottom', 'mmoe', 'ple', 'hmoe', 'star', 'sar_net', 'm2m', 'adasparse', 'pepnet',
       'epnet', 'ppnet', 'apg', 'hamur')
FAST_ZOO = ('shared_bottom', 'mmoe', 'star')  # trained by `make test-fast` too
EPOCHS = 3
BATCH = 256
_FAST = {'xla_backend_optimization_level': 0}


def compiled(fn, *args):
  """fn jitted and compiled for the shapes of args, without XLA's backend optimisations."""
  return jax.jit(fn).lower(*args).compile(_FAST)


def _init(model, batch, seed=0):
  return compiled(lambda k, b: model.init(k, b), jax.random.key(seed), batch)(
      jax.random.key(seed), batch)


def _apply(model, variables, batch, **kwargs):
  return compiled(lambda v, b: model.apply(v, b, **kwargs), variables, batch)(variables, batch)


def zoo_config(name: str, **model_overrides):
  """model_overrides: top-level model keys, or a model's block as a dict (apg={'rank': 4})."""
  c = small_config(num_train=24_000, num_val=8_000, num_test=1_000, heterogeneity=1.0,
                   base_rates=(0.2, 0.3, 0.1, 0.25))
  c.model.name = name
  c.model.hidden = (32, 16)
  c.model.embed_dim = 8
  c.model.scenario_embed_dim = 8
  for block in ('mmoe', 'ple', 'hmoe', 'sar_net', 'm2m'):
    c.model[block].num_experts = 3
  c.model.star.aux_hidden = (8,)
  c.model.m2m.attention_dim = 8
  c.model.apg.update({'rank': 8, 'generator_hidden': (16,)})
  c.model.hamur.update({'rank': 4, 'adapter_dim': 8, 'hyper_hidden': (16,)})
  if name == 'ple':
    c.model.hidden = (32, 16, 16)  # two extraction levels, so the progressive path is tested
  c.model.update(model_overrides)
  c.train.batch_size = BATCH
  c.train.num_epochs = EPOCHS
  return c


@pytest.fixture(scope='module')
def data():
  c = zoo_config('logistic')
  ds = load_dataset(c.data)
  batches = [model_inputs(b) for epoch in range(EPOCHS)
             for b in pipeline.train_batches(ds.splits['train'], BATCH, c.seed, epoch)]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)  # (steps, B, ...)
  n_val = len(ds.splits['validation']['label'])
  val = model_inputs(next(pipeline.eval_batches(ds.splits['validation'], n_val)))
  small = model_inputs(next(pipeline.eval_batches(ds.splits['train'], 37)))  # odd B: no clashes
  return ds, stacked, val, small


def _fit(name: str, ds, stacked, val, base_rate=None):
  """(model, trained state, trained outputs on the validation split, validation AUC)."""
  c = zoo_config(name)
  model = build_model(c.model, ds.spec, base_rate)
  tx = make_optimizer(c.train, len(stacked['label']))

  def run(stacked, val, key):
    first = jax.tree.map(lambda a: a[0], stacked)
    state = create_train_state(model, tx, first, key)
    state, step_metrics = jax.lax.scan(make_train_step(model, tx, mi_weight(c.model)),
                                       state, stacked)
    # What the predict step computes (sigmoid of these logits), with the model's other outputs.
    return state, step_metrics['loss'], model.apply(_variables(state), val)

  key = jax.random.key(c.seed)
  state, losses, outputs = compiled(run, stacked, val, key)(stacked, val, key)
  assert np.isfinite(np.asarray(losses)).all(), f'{name}: non-finite training loss'
  auc = metrics.auc(ds.splits['validation']['label'], np.asarray(outputs['logits']))
  return model, state, outputs, auc


@pytest.fixture(scope='module')
def fitted(data):
  ds, stacked, val, _ = data
  return functools.lru_cache(maxsize=None)(
      lambda name, base_rate=None: _fit(name, ds, stacked, val, base_rate))


def _variables(state):
  return {'params': state.params, **state.model_state}


def _with_scenario(batch, s):
  return {**batch, 'scenario': np.full_like(batch['scenario'], s)}


def _capture(model, variables, batches, module_name: str, train: bool = False,
             with_logits: bool = False):
  """For each batch, the outputs of the submodules called `module_name` (in the model's row
  order), and the logits if `with_logits`; compiled once for all the batches (same shapes)."""
  mutable = [k for k in variables if k != 'params'] if train else []

  def run(v, b):
    out, state = model.apply(v, b, train=train, mutable=mutable,
                             capture_intermediates=lambda mdl, _: mdl.name == module_name)
    found = []

    def walk(tree):
      for key, value in tree.items():
        if key == '__call__':
          found.extend(value)
        elif isinstance(value, dict):
          walk(value)

    walk(state['intermediates'])
    return out['logits'], found

  fn = compiled(run, variables, batches[0])
  results = [fn(variables, b) for b in batches]
  return [(np.asarray(logits), [np.asarray(o) for o in found]) if with_logits
          else [np.asarray(o) for o in found] for logits, found in results]


def _set(params, path, fn):
  """A copy of `params` with the leaf at `path` replaced by fn(leaf)."""
  if not path:
    return fn(params)
  return {**params, path[0]: _set(params[path[0]], path[1:], fn)}


def test_every_zoo_model_is_registered():
  assert set(ZOO) <= set(model_names())


@pytest.mark.parametrize('name,overrides,message', [
    ('mmoe', {'num_experts': 0}, 'model.mmoe.num_experts must be a positive integer'),
    ('ple', {'specific_experts': 0}, 'model.ple.specific_experts must be a positive integer'),
    ('star', {'pn_momentum': 1.0}, 'model.star.pn_momentum must lie in [0, 1)'),
    ('hamur', {'pn_momentum': -0.1}, 'model.hamur.pn_momentum must lie in [0, 1)'),
    ('adasparse', {'form': 'prune'}, 'unknown model.adasparse.form'),
    ('adasparse', {'sparsity_range': (0.6, 0.1)}, 'model.adasparse.sparsity_range'),
    ('pepnet', {'prior_fields': ('user_id',)}, 'model.pepnet.prior_fields names unknown'),
    ('ppnet', {'prior_fields': ('user_id',)}, 'model.ppnet.prior_fields names unknown'),
    ('apg', {'condition': 'user'}, 'unknown model.apg.condition'),
    ('apg', {'overparam': -1}, 'model.apg.overparam must be >= 0'),
    ('hamur', {'adapters': 3}, 'model.hamur.adapters=3 exceeds the 2 hidden layers'),
    ('m2m', {'meta_layers': -1}, 'model.m2m.meta_layers must be >= 0'),
])
def test_invalid_config_values_are_rejected(data, name, overrides, message):
  ds = data[0]
  with pytest.raises(ValueError, match=re.escape(message)):
    build_model(zoo_config(name, **{name: overrides}).model, ds.spec)


def test_invalid_shared_config_value_is_rejected(data):
  with pytest.raises(ValueError, match=re.escape('unknown model.scenario_matmul')):
    build_model(zoo_config('star', scenario_matmul='gather').model, data[0].spec)


# ---- 1. shapes ---------------------------------------------------------------------------------

@pytest.mark.parametrize('name', fast_subset(ZOO, FAST_ZOO))
def test_shapes(data, fitted, name):
  _, _, val, _ = data
  _, state, outputs, _ = fitted(name)
  n = len(val['label'])
  assert outputs['logits'].shape == (n,) and outputs['logits'].dtype == jnp.float32
  assert np.isfinite(np.asarray(outputs['logits'])).all()
  assert set(outputs) <= {'logits', 'aux_loss'}
  assert count_params(state.params) > 0


# ---- 2. learning: beats the scenario-blind logistic regression trained the same way -------------

@pytest.mark.parametrize('name', fast_subset(ZOO, FAST_ZOO))
def test_learns_beyond_scenario_blind_logistic(fitted, name):
  baseline = fitted('logistic')[3]
  auc = fitted(name)[3]
  assert auc > baseline + 0.02, f'{name}: validation AUC {auc:.4f} vs logistic {baseline:.4f}'


# ---- 3. mechanisms -----------------------------------------------------------------------------

@pytest.mark.parametrize('name', ZOO)
def test_never_builds_batch_by_weight_tensor(data, name):
  """No intermediate of the forward and backward pass has the shape (B, d_in, d_out) of any
  weight matrix (d_in, d_out) of the model (stacked per-scenario kernels included)."""
  ds, _, _, small = data
  model = build_model(zoo_config(name).model, ds.spec)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), small))
  B = small['scenario'].shape[0]
  forbidden = {(B, *leaf.shape[-2:])
               for path, leaf in jax.tree_util.tree_flatten_with_path(variables['params'])[0]
               if leaf.ndim >= 2 and min(leaf.shape[-2:]) > 1
               and not any(w in jax.tree_util.keystr(path) for w in ('bias', 'scale'))}
  state = {k: v for k, v in variables.items() if k != 'params'}

  def loss(params, state):
    out, _ = model.apply({'params': params, **state}, small, train=True, mutable=list(state),
                         rngs={'dropout': jax.random.key(1)})
    return jnp.sum(out['logits'])

  jaxpr = jax.make_jaxpr(jax.grad(loss))(variables['params'], state)

  seen = jaxpr_shapes(jaxpr.jaxpr)
  assert not seen & forbidden, f'{name} built a (B, d_in, d_out) tensor: {seen & forbidden}'


def test_mmoe_gates_differ_by_scenario(data, fitted):
  _, _, val, _ = data
  model, state, _, _ = fitted('mmoe')
  rows = jax.tree.map(lambda a: a[:64], val)
  gates = [found[0] for found in _capture(
      model, _variables(state), [_with_scenario(rows, s) for s in range(4)], 'gate')]
  for g in gates:
    np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-5)
  for s in range(1, 4):
    assert np.abs(gates[s] - gates[0]).max() > 1e-3, f'scenario {s} uses scenario 0 gate'


def _logits_of_params(model, variables, rows):
  """A compiled params -> logits function (other collections fixed)."""
  return compiled(lambda p: model.apply({**variables, 'params': p}, rows)['logits'],
                  variables['params'])


def test_ple_specific_experts_are_private_and_shared_path_is_progressive(data, fitted):
  """Scenario 1's last-level experts never touch scenario 0's rows; its first-level experts do,
  through the shared gate of the progressive extraction."""
  _, _, val, _ = data
  model, state, _, _ = fitted('ple')
  rows = _with_scenario(jax.tree.map(lambda a: a[:64], val), 0)
  params = state.params
  apply = _logits_of_params(model, _variables(state), rows)
  base = np.asarray(apply(params))
  bump = lambda k: k.at[1].add(0.5)  # noqa: E731 - scenario 1's experts
  last = np.asarray(apply(_set(params, ('level_1_specific_kernel',), bump)))
  first = np.asarray(apply(_set(params, ('level_0_specific_kernel',), bump)))
  np.testing.assert_allclose(last, base, rtol=1e-6, atol=1e-6)
  assert np.abs(first - base).max() > 1e-4
  S, m, n = 4, 1, 3
  assert params['level_0_shared_gate']['kernel'].shape[-1] == S * m + n
  assert params['level_0_gate_kernel'].shape[-1] == m + n


def test_hmoe_task_constrained_backprop(data, fitted):
  """Rows of scenario 0 train tower 0 only; the explicit label-space gate mixes all towers."""
  _, _, val, _ = data
  model, state, _, _ = fitted('hmoe')
  rows = _with_scenario(jax.tree.map(lambda a: a[:64], val), 0)
  grad_fn = jax.grad(lambda p: jnp.sum(model.apply({'params': p}, rows)['logits']))
  grads = compiled(grad_fn, state.params)(state.params)
  out_grad = np.asarray(grads['output_kernel'])
  assert np.abs(out_grad[0]).max() > 0 and np.abs(out_grad[1:]).max() == 0
  assert np.abs(np.asarray(grads['towers']['kernel_0'][1:])).max() == 0
  assert np.abs(np.asarray(grads['explicit_gate']['dense']['kernel'][0])).max() > 0
  mix = _capture(model, _variables(state), [rows], 'explicit_gate')[0][0]
  np.testing.assert_allclose(mix.sum(-1), 1.0, rtol=1e-5)
  assert (mix[:, 1:] > 0).all()  # other scenarios' scores take part in the prediction


def _row_order_model(name, ds):
  """The model on the 'onehot' path: same parameters as the default 'tiled' one (tests/
  test_scenario_ops.py), but intermediates keep the batch's row order and size (no tiles), which
  the per-row checks below read."""
  return build_model(zoo_config(name, scenario_matmul='onehot').model, ds.spec)


def test_star_partitioned_norm_keeps_statistics_per_scenario(data, fitted):
  ds, _, val, _ = data
  _, state, _, _ = fitted('star')
  model = _row_order_model('star', ds)
  stats = state.model_state['batch_stats']['partitioned_norm']
  mean, var = np.asarray(stats['mean']), np.asarray(stats['var'])
  assert mean.shape == var.shape == (4, mean.shape[1])
  for s in range(4):
    assert np.abs(mean[s]).max() > 1e-3  # moved from the initial 0
    for t in range(s):
      assert np.abs(mean[s] - mean[t]).max() > 1e-2, f'scenarios {s} and {t} share statistics'
      assert np.abs(var[s] - var[t]).max() > 1e-2
  # In training, scenario 0's rows are normalised by their own moments only: the same with or
  # without the other scenarios' rows in the batch.
  rows = jax.tree.map(lambda a: a[:128], val)
  zero = np.asarray(rows['scenario']) == 0
  alone = jax.tree.map(lambda a: a[zero], rows)
  variables = _variables(state)
  normed = _capture(model, variables, [rows], 'partitioned_norm', train=True)[0][0]
  normed_alone = _capture(model, variables, [alone], 'partitioned_norm', train=True)[0][0]
  np.testing.assert_allclose(normed[zero], normed_alone, rtol=1e-4, atol=1e-4)
  # The star kernels: W_s ⊙ W with W_s trained away from its initial 1.
  assert np.abs(np.asarray(state.params['star_0']['scenario_kernel']) - 1).max() > 1e-3


def test_sar_net_scenario_experts_are_private(data, fitted):
  _, _, val, _ = data
  model, state, _, _ = fitted('sar_net')
  rows = jax.tree.map(lambda a: a[:128], val)
  scen = np.asarray(rows['scenario'])
  apply = _logits_of_params(model, _variables(state), rows)
  base = np.asarray(apply(state.params))
  bumped = np.asarray(apply(_set(state.params, ('specific_expert_0', 'dense_0', 'kernel'),
                                 lambda k: k.at[1].add(0.5))))
  changed = np.abs(bumped - base) > 1e-6
  assert changed[scen == 1].any() and not changed[scen != 1].any()
  scale = np.asarray(state.params['transform_scale'])
  assert np.abs(scale[1] - scale[0]).max() > 1e-3  # scenario-specific transformation learnt


def test_m2m_generates_scenario_weights(data, fitted):
  _, _, val, _ = data
  model, state, _, _ = fitted('m2m')
  rows = jax.tree.map(lambda a: a[:64], val)
  generated = _capture(model, _variables(state), [rows], 'weight_generator')[0]
  for w in generated:  # meta attention and meta tower
    assert w.shape[0] == 4  # one generated weight per scenario, not per example
    for s in range(1, 4):
      assert np.abs(w[s] - w[0]).max() > 1e-3


def test_adasparse_pruner_forms(data, fitted):
  ds, _, val, small = data
  model, state, _, _ = fitted('adasparse')
  # alpha's schedule counted every training step
  assert int(state.model_state['counters']['adasparse_steps']) == EPOCHS * (24_000 // BATCH)
  rows = jax.tree.map(lambda a: a[:64], val)
  (fusion,), (same,), (other,) = _capture(
      model, _variables(state), [rows] + [_with_scenario(rows, s) for s in (0, 1)], 'pruner_0')
  assert fusion.min() >= 0 and fusion.max() <= 2.0
  assert ((fusion == 0) | (fusion >= 0.01)).all()  # pruned or kept, nothing in (0, eps)
  assert np.abs(other - same).max() > 1e-3  # domain-aware factors
  for form, check in (('binarization', lambda p: np.isin(p, (0.0, 1.0)).all()),
                      ('scaling', lambda p: ((p > 0) & (p < 2)).all())):
    m = build_model(zoo_config('adasparse', adasparse={'form': form}).model, ds.spec)
    (logits, (factors,)), = _capture(m, _init(m, small), [small], 'pruner_input',
                                     with_logits=True)
    assert np.isfinite(logits).all() and check(factors), form


@pytest.mark.parametrize('name', ['pepnet', 'epnet', 'ppnet'])
def test_pepnet_gates_lie_in_0_2(data, fitted, name):
  _, _, val, _ = data
  model, state, _, _ = fitted(name)
  rows = jax.tree.map(lambda a: a[:256], val)
  names = {'pepnet': ['ep_gate', 'pp_gate_0', 'pp_gate_1'], 'epnet': ['ep_gate'],
           'ppnet': ['pp_gate_0', 'pp_gate_1']}[name]
  assert {k for k in state.params if 'gate' in k} == set(names)
  for gate in names:
    g = _capture(model, _variables(state), [rows], gate)[0][0]
    assert g.min() > 0 and g.max() < 2, f'{gate} outside (0, 2): [{g.min()}, {g.max()}]'
    assert g.std(axis=0).max() > 1e-3  # personalised: the gate varies over examples


def test_apg_overparameterisation_merges_to_the_same_outputs(data):
  ds, _, _, small = data
  over = build_model(zoo_config('apg', apg={'overparam': 24, 'generate_bias': True}).model,
                     ds.spec)
  plain = build_model(zoo_config('apg', apg={'generate_bias': True}).model, ds.spec)
  v = _init(over, small)
  merged = merge_overparam(v['params'])
  assert jax.tree.structure(merged) == jax.tree.structure(
      jax.eval_shape(lambda: plain.init(jax.random.key(1), small))['params'])
  assert count_params(merged) < count_params(v['params'])
  np.testing.assert_allclose(_apply(over, v, small)['logits'],
                             _apply(plain, {'params': merged}, small)['logits'],
                             rtol=1e-4, atol=1e-5)


def test_apg_conditions_and_low_rank_weights(data, fitted):
  ds, _, _, small = data
  _, state, _, _ = fitted('apg')
  layer = state.params['apg_0']
  d0 = len(ds.spec.cat_names) * 8 + ds.spec.num_dense
  assert layer['U'].shape == (d0, 8) and layer['V'].shape == (8, 32)  # never a (d_in, d_out)
  assert not any(leaf.shape[-2:] == (d0, 32) for leaf in jax.tree.leaves(layer))
  for condition in ('mixed', 'self'):
    m = build_model(zoo_config('apg', apg={'condition': condition}).model, ds.spec)
    (logits, cores), = _capture(m, _init(m, small), [small], 'core', with_logits=True)
    assert [c.shape for c in cores] == [(37, 64)] * 2  # a K x K core per example and layer
    assert logits.shape == (37,) and np.isfinite(logits).all()


def test_hamur_hypernetwork_is_instance_wise_and_adapters_domain_specific(data, fitted):
  ds, _, val, _ = data
  _, state, _, _ = fitted('hamur')
  model = _row_order_model('hamur', ds)
  rows = jax.tree.map(lambda a: a[:128], val)
  scen = np.asarray(rows['scenario'])
  cores = _capture(model, _variables(state), [rows], 'hyper_out')[0][0]  # (B, K*K)
  assert cores.shape == (128, 16) and cores.std(axis=0).max() > 1e-3  # varies by instance
  apply = _logits_of_params(model, _variables(state), rows)
  base = np.asarray(apply(state.params))
  bumped = np.asarray(apply(_set(state.params, ('adapter_0_down', 'U'),
                                 lambda u: u.at[2].add(0.5))))
  changed = np.abs(bumped - base) > 1e-6
  assert changed[scen == 2].any() and not changed[scen != 2].any()
  assert 'adapter_0_norm' in state.model_state['batch_stats']


# ---- the reference models: mlp (scenario-blind), shared_bottom (a tower each), logistic --------

def test_mlp_is_scenario_blind_and_shared_bottom_has_one_tower_per_scenario(data):
  ds, _, _, small = data
  S = ds.spec.num_scenarios
  for name in ('mlp', 'shared_bottom'):
    c = zoo_config(name, hidden=(32, 16, 8))
    model = build_model(c.model, ds.spec)
    v = _init(model, small)
    if name == 'shared_bottom':
      p = v['params']
      assert set(p['bottom']) == {'dense_0', 'dense_1'}  # shared: all widths but the last
      assert p['bottom']['dense_1']['kernel'].shape == (32, 16)
      assert p['towers']['dense_0']['kernel'].shape == (S, 16, 8)  # per scenario: the last width
      assert p['tower_output']['kernel'].shape == (S, 8, 1)  # ... and the output layer
      # A row's logit is its own scenario's tower: equal to a plain MLP with that tower's weights.
      s = 2
      x = small
      bottom = {f'dense_{i}': p['bottom'][f'dense_{i}'] for i in range(2)}
      bottom['dense_2'] = {k: p['towers']['dense_0'][k][s] for k in ('kernel', 'bias')}
      plain = build_model(zoo_config('mlp', hidden=(32, 16, 8)).model, ds.spec)
      want = _apply(plain, {'params': {'features': p['features'], 'mlp': bottom, 'output': {
          k: p['tower_output'][k][s] for k in ('kernel', 'bias')}}}, _with_scenario(x, s))
      got = _apply(model, v, _with_scenario(x, s))
      np.testing.assert_allclose(got['logits'], want['logits'], rtol=1e-5, atol=1e-6)
    by_scenario = [np.asarray(_apply(model, v, _with_scenario(small, s))['logits'])
                   for s in range(S)]
    differs = any(not np.allclose(by_scenario[0], o) for o in by_scenario[1:])
    assert differs == (name == 'shared_bottom'), name


def test_logistic_starts_at_the_base_rate_and_trains(data, fitted):
  ds, _, val, small = data
  model = build_model(zoo_config('logistic').model, ds.spec, base_rate=0.04)
  p0 = jax.nn.sigmoid(_apply(model, _init(model, small), small)['logits'])
  assert float(jnp.mean(p0)) == pytest.approx(0.04, rel=0.1)
  base_rate = float(np.mean(ds.splits['train']['label']))
  auc, from_half = fitted('logistic', base_rate)[3], fitted('logistic')[3]
  print('logistic validation AUC', auc, 'from p = 0.5:', from_half)
  assert auc > from_half + 0.02  # measured: 0.595 vs 0.557 (3 epochs at lr 1e-3)
  with pytest.raises(ValueError, match='base rate'):
    build_model(zoo_config('logistic').model, ds.spec, base_rate=0.0)


def test_a_non_numeric_width_is_a_config_error():
  from midpg_jax import config as default
  from midpg_jax.errors import ConfigError
  from midpg_jax.models import build_model
  cfg = default.get_config().model
  cfg.name, cfg.hidden = 'mlp', ('abc',)
  with pytest.raises(ConfigError, match=r"model.hidden must be a tuple of widths, got \('abc',\)"):
    build_model(cfg, None)

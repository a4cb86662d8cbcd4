"""MI-DPG: shapes, identity at initialisation, equal computation paths, no (B, d_in, d_out)."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from midpg_jax.data import load_dataset, pipeline
from midpg_jax.models import build_model
from midpg_jax.train_state import init_variables, model_inputs
from conftest import compiled, jaxpr_shapes, perturbed, run_compiled, small_config

# Every model function runs jitted (conftest.run_compiled), never op by op: eagerly, MI-DPG's init
# alone compiled one program per primitive and parameter shape (36 CPU-s against 7.6).


@pytest.fixture(scope='module')
def data():
  c = small_config()
  ds = load_dataset(c.data)
  batch = model_inputs(next(pipeline.eval_batches(ds.splits['train'], 64)))
  return c, ds, batch


def _init(model_cfg, ds, batch, seed=0):
  model = build_model(model_cfg, ds.spec)
  return model, run_compiled(lambda k, b: init_variables(model, b, k), jax.random.key(seed),
                             batch)


def _apply(model, variables, batch):
  return run_compiled(model.apply, variables, batch)


@pytest.fixture(scope='module')
def initialised(data):
  """(model, variables) of the default MI-DPG at seed 0, for the tests that only read them."""
  c, ds, batch = data
  return _init(c.model, ds, batch)


def test_shapes_and_dtypes(data, initialised):
  c, ds, batch = data
  model, variables = initialised
  out = _apply(model, variables, batch)
  assert out['logits'].shape == (64,) and out['logits'].dtype == jnp.float32
  assert out['mi_bound'].shape == () and np.isfinite(float(out['mi_bound']))
  p = variables['params']
  d0 = len(ds.spec.cat_names) * c.model.embed_dim + ds.spec.num_dense
  S, r, rs = ds.spec.num_scenarios, c.model.midpg.rank, c.model.midpg.specific_rank
  assert p['layer_0']['kernel'].shape == (d0, 64)
  assert p['layer_0']['shared_in'].shape == (d0, r)
  assert p['layer_0']['shared_out'].shape == (r, 64)
  assert p['layer_0']['specific_in'].shape == (S, d0, rs)
  assert p['layer_0']['specific_out'].shape == (S, rs, 64)
  assert p['features']['embed_c0'].shape == (ds.spec.cat_vocab_sizes[0], c.model.embed_dim)


def test_identity_at_initialisation_equals_plain_backbone(data, initialised):
  """With M = 0 (its initial value), MI-DPG computes exactly the plain backbone MLP."""
  c, ds, batch = data
  midpg, v = initialised
  plain_cfg = c.model.copy_and_resolve_references()
  plain_cfg.name = 'mlp'
  plain, pv = _init(plain_cfg, ds, batch, seed=1)
  p = v['params']
  for l in range(len(c.model.hidden)):
    np.testing.assert_array_equal(p[f'layer_{l}']['shared_out'], 0)
    np.testing.assert_array_equal(p[f'layer_{l}']['specific_out'], 0)
  copied = {'features': p['features'], 'output': p['output'],
            'mlp': {f'dense_{l}': {'kernel': p[f'layer_{l}']['kernel'],
                                   'bias': p[f'layer_{l}']['bias']}
                    for l in range(len(c.model.hidden))}}
  assert jax.tree_util.tree_structure(copied) == jax.tree_util.tree_structure(pv['params'])
  np.testing.assert_allclose(_apply(midpg, v, batch)['logits'],
                             _apply(plain, {'params': copied}, batch)['logits'], rtol=1e-5,
                             atol=1e-6)


def test_ragged_and_onehot_paths_agree(data, initialised):
  c, ds, batch = data
  model, v = initialised
  v = perturbed(v)  # non-zero M everywhere: the scenario paths differ from the plain backbone
  onehot_cfg = c.model.copy_and_resolve_references()
  onehot_cfg.scenario_matmul = 'onehot'
  onehot = build_model(onehot_cfg, ds.spec)
  a = _apply(model, v, batch)
  b = _apply(onehot, v, batch)
  np.testing.assert_allclose(a['logits'], b['logits'], rtol=1e-4, atol=1e-5)
  assert float(a['mi_bound']) == pytest.approx(float(b['mi_bound']), rel=1e-5)


def test_decomposed_path_equals_explicit_weights(data):
  """The instance-aware decomposed forward equals building W * (1 + M) per example explicitly."""
  c, ds, batch = data
  cfg = c.model.copy_and_resolve_references()
  cfg.midpg.generator_features = ('c5',)
  model, v = _init(cfg, ds, batch)
  v = perturbed(v)
  from midpg_jax.models.midpg import ModulatedDense
  r, rs = cfg.midpg.rank, cfg.midpg.specific_rank
  layer = ModulatedDense(32, ds.spec.num_scenarios, r, rs)
  rng = np.random.default_rng(1)
  h = rng.standard_normal((5, 16), np.float32)
  scen = np.array([0, 1, 2, 3, 1])
  core = rng.standard_normal((5, r, r), np.float32)
  lv = perturbed(run_compiled(lambda k: layer.init(k, h, scen, core, 'instance'),
                              jax.random.key(0)))
  got = run_compiled(lambda lv: layer.apply(lv, h, scen, core, 'instance'), lv)
  p = jax.tree.map(np.asarray, lv['params'])
  m = (np.einsum('ia,bac,co->bio', p['shared_in'], core, p['shared_out'])
       + np.einsum('bik,bko->bio', p['specific_in'][scen], p['specific_out'][scen]))
  want = np.einsum('bi,bio->bo', h, p['kernel'][None] * (1 + m)) + p['bias']
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  out = _apply(model, v, batch)
  assert out['logits'].shape == (64,) and np.isfinite(np.asarray(out['logits'])).all()


@pytest.mark.parametrize('generator_features', [(), ('c5',)])
def test_never_builds_batch_by_weight_tensor(data, generator_features):
  c, ds, batch = data
  cfg = c.model.copy_and_resolve_references()
  cfg.midpg.generator_features = generator_features
  model = build_model(cfg, ds.spec)
  v = jax.eval_shape(lambda k: init_variables(model, batch, k), jax.random.key(0))  # shapes only
  B = batch['scenario'].shape[0]
  widths = [len(ds.spec.cat_names) * cfg.embed_dim + ds.spec.num_dense, *cfg.hidden]
  forbidden = {(B, i, o) for i, o in zip(widths[:-1], widths[1:])}
  grad_fn = jax.grad(lambda p: jnp.sum(model.apply({'params': p}, batch)['logits']))
  jaxpr = jax.make_jaxpr(grad_fn)(v['params'])

  seen = jaxpr_shapes(jaxpr.jaxpr)
  assert not seen & forbidden, f'built a (B, d_in, d_out) tensor: {seen & forbidden}'


@pytest.mark.slow
def test_ablation_switches_build_and_run(data):
  c, ds, batch = data
  switches = ({'use_shared': False}, {'use_specific': False}, {'combine': 'replace'},
              {'mi_estimator': 'jsd'}, {'mi_estimator': 'mine'}, {'mi_estimator': 'none'})
  cfgs = [c.model.copy_and_resolve_references() for _ in switches]
  for cfg, overrides in zip(cfgs, switches):
    cfg.midpg.update(overrides)
  models = [build_model(cfg, ds.spec) for cfg in cfgs]
  # Every switch's init and forward pass in one program: one compilation, not six.
  outs = run_compiled(lambda k, b: [m.apply(init_variables(m, b, k), b) for m in models],
                      jax.random.key(0), batch)
  for cfg, overrides, out in zip(cfgs, switches, outs):
    assert np.isfinite(np.asarray(out['logits'])).all(), overrides
    assert ('mi_bound' in out) == (cfg.midpg.mi_estimator != 'none')


@pytest.mark.parametrize('key,value,match', [
    ('midpg.rank', 0, 'model.midpg.rank'),
    ('midpg.mi_estimator', 'bogus', 'model.midpg.mi_estimator'),
    ('midpg.combine', 'add', 'model.midpg.combine'),
    ('midpg.mi_weight', -1.0, 'model.midpg.mi_weight'),
    ('scenario_matmul', 'loop', 'model.scenario_matmul'),
    ('midpg.generator_features', ('nope',), 'model.midpg.generator_features'),
    ('name', 'nope', 'model.name')])
def test_bad_config_values_name_the_problem(data, key, value, match):
  c, ds, _ = data
  cfg = c.model.copy_and_resolve_references()
  cfg.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=match):
    build_model(cfg, ds.spec)


# ---- The MI term shapes the weighting matrices (issue 9) ----------------------------------------

STEPS, BATCH = 80, 256


@pytest.fixture(scope='module')
def trained(data):
  """MI-DPG trained STEPS Adam steps from the same seed and batches with mi_weight 0 and 0.1:
  {lambda: (model, params)} (one compilation: lambda is an argument of the jitted loop)."""
  import optax
  from midpg_jax import objective
  c, ds, _ = data
  model = build_model(c.model, ds.spec)
  batches = [model_inputs(b) for b in pipeline.train_batches(ds.splits['train'], BATCH, 0, 0)]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches[:STEPS])
  tx = optax.adam(3e-3)

  def fit(mi_weight, stacked):
    params = init_variables(model, jax.tree.map(lambda a: a[0], stacked),
                            jax.random.key(0))['params']

    def step(carry, batch):
      params, opt = carry
      grads = jax.grad(lambda p: objective.loss_fn(model.apply({'params': p}, batch), batch,
                                                   mi_weight)[0])(params)
      updates, opt = tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt), None

    return jax.lax.scan(step, (params, tx.init(params)), stacked)[0][0]

  fit = compiled(fit, 0.0, stacked)
  return model, stacked, {lam: fit(lam, stacked) for lam in (0.0, 0.1)}


def _mi_grads(model, params, batch):
  grads = run_compiled(jax.grad(lambda p, b: model.apply({'params': p}, b)['mi_bound']), params,
                       batch)
  return jax.tree.map(np.asarray, grads)


def test_mi_gradient_reaches_q_and_b_at_identity_init(data, initialised):
  """At M = 0 (Q = B = 0) the critic is linear in the sketch, so the MI term moves M at once."""
  c, ds, batch = data
  model, v = initialised
  g = _mi_grads(model, v['params'], batch)
  for l in range(len(c.model.hidden)):
    for name in ('shared_out', 'specific_out'):
      assert float(np.linalg.norm(g[f'layer_{l}'][name])) > 1e-2, (l, name)


@pytest.mark.slow
def test_mi_gradient_reaches_generator_and_every_factor_after_training(trained):
  model, stacked, fits = trained
  batch = jax.tree.map(lambda a: a[-1], stacked)
  g = _mi_grads(model, fits[0.1], batch)
  norms = {f'layer_{l}/{n}': float(np.linalg.norm(g[f'layer_{l}'][n]))
           for l in range(len(model.hidden))
           for n in ('shared_in', 'shared_out', 'specific_in', 'specific_out')}
  norms['generator'] = float(np.sqrt(sum(np.sum(x ** 2) for x in jax.tree.leaves(
      g['generator']))))
  print(norms)
  # At initialisation P, A and the generator get exactly 0 from the MI term (Q = B = 0); after
  # training every one gets a gradient of the order of 1e-3..1e-2 (measured: min 8e-4).
  assert min(norms.values()) > 2e-4, norms


def test_mi_weight_raises_the_diversity_of_the_scenarios_weighting_matrices(trained):
  model, stacked, fits = trained
  batch = jax.tree.map(lambda a: a[-1], stacked)
  apply = compiled(lambda p, b: model.apply({'params': p}, b), fits[0.0], batch)
  out = {lam: apply(p, batch) for lam, p in fits.items()}
  for l in range(len(model.hidden)):
    without, with_mi = (float(out[lam]['diagnostics'][f'diversity_l{l}']) for lam in (0.0, 0.1))
    print(l, without, with_mi)
    assert with_mi > without + 0.05, (l, without, with_mi)
  assert float(out[0.1]['mi_bound']) > float(out[0.0]['mi_bound'])


def test_sketch_and_diversity_from_factors_equal_explicit_matrices():
  from midpg_jax.models.midpg import ModulatedDense
  S, r, d_in, d_out, K = 3, 2, 6, 5, 4
  layer = ModulatedDense(d_out, S, r, r)
  rng = np.random.default_rng(2)
  h = np.ones((4, d_in), np.float32)
  core = rng.standard_normal((4, r, r), np.float32)
  scen = np.array([0, 2, 2, 1])
  lv = perturbed(run_compiled(lambda k: layer.init(k, h, scen, core, 'instance'),
                              jax.random.key(0)))
  p = {k: lv['params'][n] for k, n in (('P', 'shared_in'), ('Q', 'shared_out'),
                                       ('A', 'specific_in'), ('B', 'specific_out'))}
  u, v = rng.standard_normal((K, d_in), np.float32), rng.standard_normal((K, d_out), np.float32)
  mean_core = rng.standard_normal((S, r, r), np.float32)
  present = np.array([True, False, True])
  sketch, diversity, rms = run_compiled(
      lambda lv, p, core, mean_core, u, v: layer.apply(lv, p, core, scen, mean_core, present, u,
                                                       v, method=ModulatedDense.summary),
      lv, p, core, mean_core, u, v)
  p = jax.tree.map(np.asarray, p)
  m = p['P'] @ core @ p['Q'] + p['A'][scen] @ p['B'][scen]  # (4, d_in, d_out)
  np.testing.assert_allclose(sketch, np.einsum('ki,nio,ko->nk', u, m, v), rtol=1e-4, atol=1e-5)
  ms = (p['P'] @ mean_core @ p['Q'] + p['A'] @ p['B']).reshape(S, -1)[np.array([0, 2])]
  cos = float(ms[0] @ ms[1] / np.linalg.norm(ms[0]) / np.linalg.norm(ms[1]))
  assert float(diversity) == pytest.approx(1 - cos, rel=1e-4)
  assert float(rms) == pytest.approx(float(np.sqrt(np.mean(ms ** 2))), rel=1e-4)


LOGIT_SCALE_SWITCHES = [
    {'combine': 'replace'}, {'combine': 'replace', 'use_shared': False},
    {'combine': 'replace', 'use_specific': False},
    {'combine': 'replace', 'generator_features': ('c5',)},
    {'use_specific': False, 'generator_features': ('c5',)}, {'use_shared': False}]


@pytest.fixture(scope='module')
def initial_logit_stds(data):
  """{'mlp' or str(index in LOGIT_SCALE_SWITCHES): mean over 4 initialisations of the std of the
  initial logits over a 512-row batch}, every model in one program (one compilation, not 12)."""
  c, ds, _ = data
  batch = model_inputs(next(pipeline.eval_batches(ds.splits['train'], 512)))
  cfgs = {'mlp': c.model.copy_and_resolve_references()}
  cfgs['mlp'].name = 'mlp'
  for i, overrides in enumerate(LOGIT_SCALE_SWITCHES):
    cfgs[str(i)] = c.model.copy_and_resolve_references()
    cfgs[str(i)].midpg.update(overrides)
  models = {k: build_model(cfg, ds.spec) for k, cfg in cfgs.items()}

  def stds(keys, batch):
    def std(model, key):
      return jnp.std(model.apply(init_variables(model, batch, key), batch)['logits'])
    return {k: jnp.mean(jax.vmap(functools.partial(std, m))(keys)) for k, m in models.items()}

  keys = jax.random.split(jax.random.key(0), 4)
  return {k: float(v) for k, v in run_compiled(stds, keys, batch).items()}


@pytest.mark.slow
@pytest.mark.parametrize('overrides', LOGIT_SCALE_SWITCHES)
def test_initial_logit_scale_is_that_of_a_plain_mlp(initial_logit_stds, overrides):
  """Every combine / ablation switch starts at a plain MLP's logit scale (std within 3x; the
  'replace' initialisation used to give ~1000x: Var(M) ~ 2 / r per layer instead of 1 / d_in)."""
  plain = initial_logit_stds['mlp']
  got = initial_logit_stds[str(LOGIT_SCALE_SWITCHES.index(overrides))]
  print(overrides, got, 'mlp', plain)
  assert plain / 3 < got < plain * 3, (overrides, got, plain)


def test_every_dataset_config_has_both_generator_modes():
  from conftest import config_file
  from midpg_jax.config import DATASETS
  from midpg_jax.errors import ConfigError
  for name, dataset in (('default', 'synthetic'), ('iaac', 'iaac'), ('aliccp', 'aliccp'),
                        ('aliexpress', 'aliexpress'), ('amazon', 'amazon'), ('mind', 'mind'),
                        ('douban', 'douban')):
    mod = config_file(name)
    fields = DATASETS[dataset].instance_fields
    assert mod.get_config('scenario').model.midpg.generator_features == ()
    assert mod.get_config('instance').model.midpg.generator_features == fields != ()
    with pytest.raises(ConfigError, match='generator mode'):
      mod.get_config('user')

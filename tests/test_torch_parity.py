"""The PyTorch reference (reference/torch_midpg.py) computes what the JAX model computes.

The same parameters are loaded into both models (a perturbed copy of the torch initialisation, in
the Flax tree that `model.init` would build, copied into torch with `load_jax_params`); logits,
the loss (BCE + MI term) and one step's gradients must agree to float32 tolerance, and two Adam
steps must give the same parameters. (The parameters start from the torch side only because
compiling Flax's random initialisers takes tens of seconds on a 2-core CPU; the tree structure
and every shape come from `jax.eval_shape` of the Flax init.)
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import import_torch

torch = import_torch()
pytestmark = pytest.mark.torch

from midpg_jax import objective  # noqa: E402
from midpg_jax.models import build_model, mi_weight  # noqa: E402
from midpg_jax.models.midpg import SCENARIO_MATMULS  # noqa: E402
from midpg_jax.train_state import (TrainState, init_variables, make_optimizer,  # noqa: E402
                                   make_train_step)
from conftest import parity_data, run_compiled  # noqa: E402
from reference import torch_midpg as tm  # noqa: E402

RTOL, ATOL = 2e-4, 2e-5


@pytest.fixture(scope='module')
def data():
  return parity_data()


def _params(model, cfg, spec, batch, seed=3):
  """Shared parameters for both sides: the torch initialisation plus noise, as a Flax tree.

  Noise makes M non-zero (Q and B start at 0) so every modulation path carries gradient.
  """
  torch.manual_seed(seed)
  init = tm.params_as_jax_tree(tm.build_torch_model(cfg, spec))
  shapes = jax.eval_shape(lambda k: init_variables(model, batch, k), jax.random.key(0))['params']
  assert (jax.tree_util.tree_structure(init) == jax.tree_util.tree_structure(shapes)
          and jax.tree.map(np.shape, init) == jax.tree.map(lambda s: s.shape, shapes))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(x + 0.05 * rng.standard_normal(x.shape), jnp.float32),
                      init)


def _jax_side(model, params, batch, mi_weight):
  def loss_of(p):
    out = model.apply({'params': p}, batch)
    loss, parts = objective.loss_fn(out, batch, mi_weight)
    return loss, out
  (loss, out), grads = run_compiled(jax.value_and_grad(loss_of, has_aux=True), params)
  return out, loss, grads


def _torch_side(tmodel, params, batch, mi_weight):
  tm.load_jax_params(tmodel, jax.device_get(params))
  tbatch = tm.to_torch_batch(batch)
  tmodel.zero_grad(set_to_none=True)
  out = tmodel(tbatch)
  loss, _ = tm.loss_fn(out, tbatch, mi_weight)
  loss.backward()
  return out, loss, tm.grads_as_jax_tree(tmodel)


@pytest.mark.parametrize('overrides', [
    {},
    {'midpg': {'mi_estimator': 'jsd', 'combine': 'replace'}},
    {'midpg': {'mi_estimator': 'mine'}},
    {'midpg': {'generator_features': ('c5',)}},
    {'midpg': {'generator_features': ('c5',), 'combine': 'replace', 'use_shared': False}},
    {'name': 'mlp'},
], ids=['default', 'jsd-replace', 'mine', 'instance-aware', 'instance-replace-specific', 'mlp'])
def test_logits_loss_and_gradients_match(data, overrides):
  c, ds, batch = data
  cfg = c.model.copy_and_resolve_references()
  cfg.update(overrides)
  model = build_model(cfg, ds.spec)
  params = _params(model, cfg, ds.spec, batch)
  mi_weight = 0.5  # larger than the default so the MI gradients are well above tolerance
  tmodel = tm.build_torch_model(cfg, ds.spec)
  tout, tloss, tgrads = _torch_side(tmodel, params, batch, mi_weight)
  jax_paths, torch_paths = ((cfg.scenario_matmul,), ('segment',))
  if not overrides:  # every JAX scenario-matmul path and both torch ones, on the default config
    jax_paths, torch_paths = SCENARIO_MATMULS, tm.SCENARIO_MATMULS
  for torch_path in torch_paths[1:]:
    other = _torch_side(tm.build_torch_model(cfg, ds.spec, scenario_matmul=torch_path), params,
                        batch, mi_weight)
    np.testing.assert_allclose(other[0]['logits'].detach().numpy(),
                               tout['logits'].detach().numpy(), rtol=RTOL, atol=ATOL)
    chex.assert_trees_all_close(other[2], tgrads, rtol=RTOL, atol=ATOL)

  for path in jax_paths:
    cfg.scenario_matmul = path
    out, loss, grads = _jax_side(build_model(cfg, ds.spec), params, batch, mi_weight)
    np.testing.assert_allclose(tout['logits'].detach().numpy(), out['logits'], rtol=RTOL,
                               atol=ATOL, err_msg=path)
    assert ('mi_bound' in tout) == ('mi_bound' in out)
    if 'mi_bound' in out:
      assert float(tout['mi_bound'].detach()) == pytest.approx(float(out['mi_bound']), rel=1e-4,
                                                               abs=1e-5)
    assert float(tloss.detach()) == pytest.approx(float(loss), rel=1e-5, abs=1e-6), path
    chex.assert_trees_all_close(tgrads, grads, rtol=RTOL, atol=ATOL)


def test_adam_steps_match_train_step(data):
  """torch.optim.Adam on the reference = optax.adam through `make_train_step` (on the plain
  backbone: the optimizer is what is compared here, and its step compiles fast)."""
  c, ds, batch = data
  c = c.copy_and_resolve_references()
  c.model.name = 'mlp'
  model = build_model(c.model, ds.spec)
  tx = make_optimizer(c.train, 10)
  params = _params(model, c.model, ds.spec, batch)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state={},
                     opt_state=tx.init(params), rng=jax.random.key(0))
  tmodel = tm.build_torch_model(c.model, ds.spec)
  tm.load_jax_params(tmodel, jax.device_get(state.params))
  opt = tm.make_adam(tmodel, lr=float(c.train.learning_rate))
  step = jax.jit(make_train_step(model, tx, mi_weight(c.model)))
  tbatch = tm.to_torch_batch(batch)
  for _ in range(2):
    state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
    tloss = tm.train_step(tmodel, opt, tbatch, mi_weight(c.model))
    assert float(tloss) == pytest.approx(float(metrics['loss']), rel=1e-5)
  # After two Adam steps (lr 1e-3) parameters agree to well below one step's size.
  chex.assert_trees_all_close(tm.params_as_jax_tree(tmodel), state.params, rtol=1e-5,
                              atol=1e-6)

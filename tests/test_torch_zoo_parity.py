"""The PyTorch zoo references (reference/torch_{zoo,star,moe}.py) compute what the JAX STAR, MMoE,
PLE and per-scenario-tower Shared-Bottom compute.

The same parameters (a perturbed copy of the torch initialisation, in the Flax tree that
`model.init` would build: structure and shapes checked against `jax.eval_shape`) go into both
sides; logits, loss and one step's gradients must agree to float32 tolerance for both torch
scenario loops ('subset' and 'masked'), STAR's running per-scenario statistics must get the same
train-mode update (and give the same eval-mode logits), and two Adam steps through
`make_train_step` must give the same parameters.
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
from midpg_jax.models import build_model  # noqa: E402
from midpg_jax.train_state import (TrainState, init_variables, make_optimizer,  # noqa: E402
                                   make_train_step)
from conftest import parity_data, run_compiled  # noqa: E402
from reference import torch_midpg as tm  # noqa: E402
from reference import torch_zoo as tz  # noqa: E402

RTOL, ATOL = 2e-4, 2e-5
# PLE gets three widths so it has two extraction levels (the lower one with the shared gate).
HIDDEN = {'star': (32, 16), 'mmoe': (32, 16), 'ple': (32, 16, 8), 'shared_bottom': (32, 16)}


@pytest.fixture(scope='module')
def data():
  c, ds, batch = parity_data()
  assert len(np.unique(batch['scenario'])) == ds.spec.num_scenarios  # every scenario present
  return c, ds, batch


def _setup(data, name, seed=3, hidden=None):
  """(cfg, JAX model, torch model, params, model_state): shared, perturbed parameters."""
  c, ds, batch = data
  cfg = c.model.copy_and_resolve_references()
  cfg.name, cfg.hidden = name, hidden or HIDDEN[name]
  model = build_model(cfg, ds.spec)
  torch.manual_seed(seed)
  tmodel = tz.build_torch_zoo_model(cfg, ds.spec)
  init, state = tz.params_as_jax_tree(tmodel), tz.state_as_jax_tree(tmodel)
  shapes = jax.eval_shape(lambda k: init_variables(model, batch, k), jax.random.key(0))
  want = {'params': shapes['params'], **{k: v for k, v in shapes.items() if k != 'params'}}
  got = {'params': init, **state}
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  assert jax.tree.map(np.shape, got) == jax.tree.map(lambda s: s.shape, want)
  # Noise makes every per-scenario weight differ from its init (ones / zeros) and the running
  # statistics non-trivial (variances stay positive).
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda x: jnp.asarray(x + 0.05 * rng.standard_normal(x.shape),
                                              jnp.float32), init)
  state = jax.tree.map(lambda x: jnp.asarray(x + 0.1 * np.abs(rng.standard_normal(x.shape)),
                                             jnp.float32), state)
  return cfg, model, params, state


@pytest.mark.parametrize('name', tz.MODELS)
def test_logits_loss_gradients_statistics_and_adam_steps_match(data, name):
  """One compiled JAX function per model (compiling dominates this test's time): the first
  step's logits, loss, gradients and updated running statistics, and two `make_train_step` Adam
  steps; the torch side with both scenario loops, and torch.optim.Adam for two steps."""
  c, ds, batch = data
  cfg, model, params, state = _setup(data, name)
  tx = make_optimizer(c.train, 10)
  train_step = make_train_step(model, tx, 0.0)

  def loss_of(p):
    out, new_state = model.apply({'params': p, **state}, batch, train=True, mutable=list(state))
    return objective.loss_fn(out, batch, 0.0)[0], (out, new_state)

  def first_step_and_two_adam_steps(params):
    (loss, (out, new_state)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    jstate = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=state,
                        opt_state=tx.init(params), rng=jax.random.key(0))
    losses = []
    for _ in range(2):
      jstate, metrics = train_step(jstate, batch)
      losses.append(metrics['loss'])
    return loss, out, new_state, grads, losses, jstate

  loss, out, new_state, grads, adam_losses, adam_state = run_compiled(
      first_step_and_two_adam_steps, params)
  # Inference with the updated running statistics (only models that keep statistics).
  eval_logits_want = run_compiled(
      lambda p, s: model.apply({'params': p, **s}, batch)['logits'], params, new_state
  ) if state else None
  tbatch = tm.to_torch_batch(batch)
  for loop in tz.SCENARIO_LOOPS:
    tmodel = tz.build_torch_zoo_model(cfg, ds.spec, scenario_loop=loop)
    tz.load_jax_params(tmodel, jax.device_get(params), jax.device_get(state))
    tmodel.train()
    tout = tmodel(tbatch)
    tloss, _ = tm.loss_fn(tout, tbatch, 0.0)
    tloss.backward()
    np.testing.assert_allclose(tout['logits'].detach().numpy(), out['logits'], rtol=RTOL,
                               atol=ATOL, err_msg=loop)
    assert float(tloss.detach()) == pytest.approx(float(loss), rel=1e-5, abs=1e-6), loop
    chex.assert_trees_all_close(tz.grads_as_jax_tree(tmodel), grads, rtol=RTOL, atol=ATOL)
    # The running statistics, updated.
    chex.assert_trees_all_close(tz.state_as_jax_tree(tmodel), new_state, rtol=RTOL, atol=ATOL)
    if state:
      tmodel.eval()  # inference uses the running statistics
      with torch.no_grad():
        eval_logits = tmodel(tbatch)['logits'].numpy()
      np.testing.assert_allclose(eval_logits, eval_logits_want, rtol=RTOL, atol=ATOL,
                                 err_msg=loop)

  # torch.optim.Adam on the reference = optax.adam through `make_train_step`, STAR's running
  # statistics carried in `model_state` across the steps.
  tmodel = tz.build_torch_zoo_model(cfg, ds.spec)
  tz.load_jax_params(tmodel, jax.device_get(params), jax.device_get(state))
  tmodel.train()
  opt = tm.make_adam(tmodel, lr=float(c.train.learning_rate))
  for want_loss in adam_losses:
    assert float(tm.train_step(tmodel, opt, tbatch, 0.0)) == pytest.approx(float(want_loss),
                                                                           rel=1e-5)
  # After two Adam steps (lr 1e-3) parameters agree to well below one step's size: within 0.5 %
  # of a step (5e-6). Adam divides by sqrt(v), so an entry whose gradient is near 0 turns float32
  # summation-order noise (the tiled path sums in another order than torch) into a few 1e-6.
  chex.assert_trees_all_close(tz.params_as_jax_tree(tmodel), adam_state.params, rtol=1e-5,
                              atol=5e-6)
  chex.assert_trees_all_close(tz.state_as_jax_tree(tmodel), adam_state.model_state, rtol=RTOL,
                              atol=ATOL)


def test_ple_with_three_levels_matches(data):
  """A middle level reads every scenario's own path (level 0 reads the input for all; the last
  level computes only the row's own path): logits and gradients as the torch reference."""
  c, ds, batch = data
  cfg, model, params, state = _setup(data, 'ple', hidden=(16, 16, 8, 8))

  def loss_of(p):
    out = model.apply({'params': p}, batch, train=True)
    return objective.loss_fn(out, batch, 0.0)[0], out

  (loss, out), grads = run_compiled(jax.value_and_grad(loss_of, has_aux=True), params)
  tmodel = tz.build_torch_zoo_model(cfg, ds.spec)
  tz.load_jax_params(tmodel, jax.device_get(params))
  tbatch = tm.to_torch_batch(batch)
  tout = tmodel(tbatch)
  tloss, _ = tm.loss_fn(tout, tbatch, 0.0)
  tloss.backward()
  np.testing.assert_allclose(tout['logits'].detach().numpy(), out['logits'], rtol=RTOL, atol=ATOL)
  chex.assert_trees_all_close(tz.grads_as_jax_tree(tmodel), grads, rtol=RTOL, atol=ATOL)


def test_star_statistics_move_and_skip_absent_scenarios(data):
  """The running statistics train mode updates are the present scenarios' only (the test above
  could not tell a no-op update from the JAX one if both kept the initial values)."""
  c, ds, batch = data
  cfg, model, params, state = _setup(data, 'star')
  tmodel = tz.build_torch_zoo_model(cfg, ds.spec)
  tz.load_jax_params(tmodel, jax.device_get(params), jax.device_get(state))
  tbatch = tm.to_torch_batch(batch)
  tbatch['scenario'] = torch.where(tbatch['scenario'] == 2, 1, tbatch['scenario'])  # 2 absent
  before = tz.state_as_jax_tree(tmodel)['batch_stats']['partitioned_norm']
  tmodel.train()
  tmodel(tbatch)
  after = tz.state_as_jax_tree(tmodel)['batch_stats']['partitioned_norm']
  for key in ('mean', 'var'):
    np.testing.assert_array_equal(after[key][2], before[key][2])
    assert np.abs(after[key][[0, 1, 3]] - before[key][[0, 1, 3]]).min() > 0


def test_a_wrong_tree_is_refused(data):
  c, ds, batch = data
  cfg, model, params, state = _setup(data, 'mmoe')
  tmodel = tz.build_torch_zoo_model(cfg, ds.spec)
  params = dict(params, extra={'kernel': np.zeros((2, 2))})
  with pytest.raises(ValueError, match='extra'):
    tz.load_jax_params(tmodel, params)

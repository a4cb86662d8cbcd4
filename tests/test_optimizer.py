"""The optimizer holds the peak learning rate and the weight decay in its state
(`train_state.make_optimizer`, optax.inject_hyperparams):

* its updates equal optax.adamw on the scheduled learning rate (and plain Adam at weight decay 0);
* two learning rates / weight decays lower the train step to the same program, which is what lets
  a comparison's grid points share one compiled step through the compilation cache;
* a checkpoint saved with another optimizer layout (plain optax.adam, as runs trained before this
  change) still restores for evaluation (`weights_only`), and not for resuming;
* a resumed run takes its learning rate and weight decay from the config, not the checkpoint.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from midpg_jax.checkpoint import Checkpointer
from midpg_jax.errors import CheckpointError
from midpg_jax.train_state import (TrainState, learning_rate_schedule, make_optimizer,
                                   make_train_step, with_hyperparams_of)
from conftest import small_config
from test_sparse_optim import _batches, _init, _spec
from midpg_jax.models import build_model


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {'w': jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=(3,)), jnp.float32)}


@pytest.mark.parametrize('weight_decay', [0.0, 0.1])
@pytest.mark.parametrize('schedule', ['linear', 'cosine'])
def test_updates_equal_adamw_on_the_scheduled_rate(weight_decay, schedule):
  c = small_config()
  c.train.learning_rate, c.train.weight_decay, c.train.schedule = 3e-2, weight_decay, schedule
  c.train.warmup_steps, c.train.grad_clip_norm = 2, 0.0
  ours = make_optimizer(c.train, total_steps=8)
  schedule_fn = learning_rate_schedule(c.train, 8)
  reference = (optax.adamw(schedule_fn, weight_decay=weight_decay) if weight_decay
               else optax.adam(schedule_fn))
  params_a = params_b = _params()
  state_a, state_b = ours.init(params_a), reference.init(params_b)
  for step in range(8):
    grads = _params(seed=step + 1)
    upd_a, state_a = ours.update(grads, state_a, params_a)
    upd_b, state_b = reference.update(grads, state_b, params_b)
    params_a, params_b = optax.apply_updates(params_a, upd_a), optax.apply_updates(params_b, upd_b)
  moved = jax.tree_util.tree_map(lambda a, b: np.abs(a - b).max(), params_b, _params())
  assert min(jax.tree_util.tree_leaves(moved)) > 1e-3  # the comparison is not vacuous
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         params_a, params_b)


def _lowered_step(learning_rate, weight_decay):
  c = small_config()
  c.model.name = 'mlp'
  c.train.learning_rate, c.train.weight_decay, c.train.sparse_embeddings = (
      learning_rate, weight_decay, False)
  spec = _spec()
  model = build_model(c.model, spec)
  tx = make_optimizer(c.train, 100)
  batch = _batches(spec, 1)[0]
  state = _init(model, tx, batch)
  step = make_train_step(model, tx, 0.0)
  return jax.jit(step).lower(state, batch).as_text(), state


def test_learning_rate_and_weight_decay_do_not_change_the_compiled_step():
  text_a, state_a = _lowered_step(1e-3, 0.0)
  text_b, state_b = _lowered_step(3e-2, 0.1)
  assert text_a == text_b
  # ... because they are values of the state, not constants of the program.
  hyper = lambda s: s.opt_state[0].hyperparams  # noqa: E731
  assert float(hyper(state_a)['learning_rate']) == pytest.approx(1e-3)
  assert float(hyper(state_b)['weight_decay']) == pytest.approx(0.1)


def test_checkpoint_of_another_optimizer_layout_restores_weights_only(tmp_path):
  params = _params()
  old_tx = optax.adam(1e-3)  # the layout runs were saved with before
  saved = TrainState(step=jnp.asarray(7, jnp.int32), params=params, model_state={},
                     opt_state=old_tx.init(params), rng=jax.random.key(0))
  ckpt = Checkpointer(str(tmp_path))
  ckpt.save('best', 7, saved, {'note': 'old layout'})
  ckpt.wait()
  c = small_config()
  target = saved.replace(opt_state=make_optimizer(c.train, 10).init(params))
  state, meta = ckpt.restore('best', target, weights_only=True)
  assert state.opt_state is None and meta == {'note': 'old layout'} and int(state.step) == 7
  jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, params)
  with pytest.raises(CheckpointError, match='different model/config'):
    ckpt.restore('best', target)  # resuming needs the optimizer state in the current layout
  ckpt.close()


def test_resumed_optimizer_state_takes_the_configs_hyperparameters():
  c = small_config()
  params = _params()
  c.train.learning_rate, c.train.weight_decay = 1e-3, 0.0
  old_tx = make_optimizer(c.train, 10)
  restored = old_tx.update(_params(seed=1), old_tx.init(params), params)[1]  # moments moved
  c.train.learning_rate, c.train.weight_decay = 3e-2, 0.1
  fresh = make_optimizer(c.train, 10).init(params)
  merged = with_hyperparams_of(restored, fresh)
  assert float(merged[0].hyperparams['learning_rate']) == pytest.approx(3e-2)
  assert float(merged[0].hyperparams['weight_decay']) == pytest.approx(0.1)
  jax.tree_util.tree_map(np.testing.assert_array_equal, merged[0].inner_state,
                         restored[0].inner_state)  # the moments stay the checkpoint's

import jax.numpy as jnp
import numpy as np
import pytest

from midpg_jax import mi

S = 4
SCEN = jnp.array([0, 1, 2, 3, 0, 1, 2, 3])
ALL = jnp.ones(S, bool)


def scores_identical():
  return jnp.zeros((8, S))


def scores_distinct(margin=20.0):
  return margin * jnp.eye(S)[SCEN]


def test_infonce_bounds():
  assert float(mi.infonce(scores_identical(), SCEN, ALL)) == pytest.approx(0.0, abs=1e-6)
  assert float(mi.infonce(scores_distinct(), SCEN, ALL)) == pytest.approx(np.log(S), abs=1e-6)
  # Only two prototypes present: the bound is capped at log 2.
  present = jnp.array([True, True, False, False])
  scen = jnp.array([0, 1, 0, 1])
  val = mi.infonce(20.0 * jnp.eye(S)[scen], scen, present)
  assert float(val) == pytest.approx(np.log(2), abs=1e-6)


def test_infonce_wrong_prototype_is_negative():
  wrong = 20.0 * jnp.eye(S)[(SCEN + 1) % S]
  assert float(mi.infonce(wrong, SCEN, ALL)) < -10


@pytest.mark.parametrize('name', ['jsd', 'mine'])
def test_jsd_and_mine_order_identical_below_distinct(name):
  same = float(mi.mi_lower_bound(name, scores_identical(), SCEN, ALL))
  far = float(mi.mi_lower_bound(name, 5.0 * (2 * jnp.eye(S)[SCEN] - 1), SCEN, ALL))
  # A constant critic carries no information: DV gives 0; the JSD form gives its floor -2 log 2.
  assert same == pytest.approx(0.0 if name == 'mine' else -2 * np.log(2), abs=1e-6)
  assert far > same + 1.0


def test_mine_is_zero_without_negatives_and_unknown_name_errors():
  one = jnp.zeros((3, 1))
  assert float(mi.mine(one, jnp.zeros(3, int), jnp.ones(1, bool))) == 0.0
  assert float(mi.mi_lower_bound('none', scores_distinct(), SCEN, ALL)) == 0.0
  with pytest.raises(ValueError, match='unknown MI estimator'):
    mi.mi_lower_bound('bogus', scores_identical(), SCEN, ALL)


def test_gradients_are_finite():
  import jax
  for name in ('infonce', 'jsd', 'mine'):
    g = jax.grad(lambda s: mi.mi_lower_bound(name, s, SCEN, ALL))(scores_distinct(3.0))
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize('name', ['infonce', 'jsd', 'mine'])
def test_scenario_rows_weighted_by_counts_equal_the_per_example_bound(name):
  """MI-DPG's scenario-only path scores S rows weighted by the scenarios' row counts; that must be
  the bound over the B examples' rows, value and gradient (a scenario absent from the batch
  included: weight 0)."""
  import jax
  rng = np.random.default_rng(0)
  table = jnp.asarray(rng.normal(size=(S, S)), jnp.float32)  # (S, S): scenario s's row of scores
  scenario = jnp.array([0, 2, 2, 3, 0, 0, 3, 2, 2])  # scenario 1 absent
  counts = jnp.bincount(scenario, length=S)
  per_example = lambda t: mi.mi_lower_bound(name, t[scenario], scenario, ALL)
  weighted = lambda t: mi.mi_lower_bound(name, t, jnp.arange(S), ALL, weights=counts)
  np.testing.assert_allclose(weighted(table), per_example(table), rtol=1e-5)
  np.testing.assert_allclose(jax.grad(weighted)(table), jax.grad(per_example)(table),
                             rtol=1e-5, atol=1e-7)

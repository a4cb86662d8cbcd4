"""Per-model config blocks (issue 12): each model reads exactly its own block, a mistake in a block
is one line naming `model.<name>.<key>`, and the flat keys of older configs name their new place."""

import json

import ml_collections
import pytest

from midpg_jax import config as default
from midpg_jax import run_config
from midpg_jax.compare.plan import set_key
from midpg_jax.data.schema import FeatureSpec
from midpg_jax.errors import ConfigError
from midpg_jax.models import build_model, default_blocks, model_names, registered
from midpg_jax.models.registry import Block

# Enough fields for every builder's field checks; no data is loaded (building a Linen module
# computes nothing).
SPEC = FeatureSpec(cat_names=('c0', 'c1', 'c2'), cat_vocab_sizes=(10, 10, 10),
                   dense_names=('d0',), scenario_names=('s0', 's1', 's2'))


def model_config(name='midpg'):
  c = default.get_config().model
  c.name = name
  return c


@pytest.mark.parametrize('name', model_names())
def test_every_block_key_is_read_by_its_builder_and_nothing_else(name):
  """A builder reading a key its block lacks fails (Block raises); a block key no builder reads
  fails the equality, as does a block missing from configs/default.py."""
  defaults = registered(name).defaults
  block = Block(name, defaults) if defaults else None
  registered(name).builder(model_config(name), block, SPEC, None)
  if defaults:
    assert block.read == set(defaults)
    assert default.get_config().model[name].to_dict() == default_blocks()[name].to_dict()


def test_a_mistyped_or_missing_block_key_is_one_line():
  c = model_config().copy_and_resolve_references()
  c.unlock()
  c.midpg.rnak = 8  # a config file may build any dict; the command line is checked by the lock
  with pytest.raises(ConfigError, match=r"^no config key model\.midpg\.rnak; model\.midpg has "
                                        r"\['combine', "):
    build_model(c, SPEC)
  c = model_config().copy_and_resolve_references()
  c.midpg = ml_collections.ConfigDict({'rank': 8})
  with pytest.raises(ConfigError, match=r"^model\.midpg lacks \['combine', "):
    build_model(c, SPEC)
  del c['midpg']
  with pytest.raises(ConfigError, match=r'^config\.model has no block model\.midpg '):
    build_model(c, SPEC)


def test_a_flat_key_from_before_the_blocks_names_its_new_place():
  assert run_config.moved_key_message('model.rank') == (
      'model.rank is now model.midpg.rank (per-model config blocks)')
  assert run_config.moved_key_message('model.apg_rank').startswith('model.apg_rank is now '
                                                                   'model.apg.rank ')
  assert 'model.mmoe.num_experts, model.ple.num_experts' in run_config.moved_key_message(
      'model.num_experts')
  assert run_config.moved_key_message('model.hidden') is None
  assert run_config.moved_key_message('model.midpg.rnak') is None
  config = default.get_config()
  with pytest.raises(ConfigError, match=r"^compare variant 'v': model\.rank is now "
                                        r"model\.midpg\.rank"):
    set_key(config, 'model.rank', 8, "compare variant 'v'")
  every_place = {f'{b}.{k}' for b, block in default_blocks().items() for k in block}
  assert {p for places in run_config.MOVED_MODEL_KEYS.values() for p in places} <= every_place


def test_a_run_saved_with_flat_model_keys_is_read_with_them_in_its_block(tmp_path):
  """config.json of a run from before the blocks: eval / predict / export read it upgraded."""
  saved = default.get_config().to_dict()
  model = saved['model']
  for name in default_blocks():
    del model[name]
  model.update(name='apg', apg_rank=8, apg_condition='mixed', rank=16, num_experts=3)
  with open(run_config.path(str(tmp_path)), 'w') as f:
    json.dump(saved, f)
  loaded = ml_collections.ConfigDict(run_config.load(str(tmp_path)))
  assert loaded.model.apg.to_dict() == {'rank': 8, 'condition': 'mixed'}
  assert 'rank' not in loaded.model and 'midpg' not in loaded.model  # not the run's model
  # The command line's config supplies the rest of the block; the run's values win.
  config, note = run_config.resolve(str(tmp_path), default.get_config(), overrides={})
  assert config.model.apg.rank == 8 and config.model.apg.condition == 'mixed'
  assert config.model.apg.overparam == 0 and 'model.apg.rank: 32 -> 8' in note
  build_model(config.model, SPEC)

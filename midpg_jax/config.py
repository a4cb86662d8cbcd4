"""The configs of every command: `get_config(mode, dataset)` builds MI-DPG on a dataset.

This file is itself the default `--config` of train, eval and prepare (a config file named by
its path, here inside the installed package); each file of the checkout's configs/ is a few lines
calling `get_config` with its dataset, so `--config configs/aliccp.py` works from any folder.
Every value can be overridden on the command line, e.g.
  midpg-train --config.model.midpg.rank=8 --config.train.num_epochs=2
MI-DPG's generator input: the config argument `:instance` (scenario plus the dataset's
user/context fields, `DATASETS[name].instance_fields`) or `:scenario` (scenario only), e.g.
`--config configs/aliccp.py:instance` (docs/midpg.md).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from midpg_jax.data import aliccp, aliexpress, amazon, iaac, scenario_wise_rec
from midpg_jax.errors import ConfigError
from midpg_jax.models import default_blocks

# Which generator input a config gets when none is named (measured: docs/midpg.md).
DEFAULT_GENERATOR_MODE = 'scenario'
GENERATOR_MODES = ('scenario', 'instance')


def with_generator_mode(config, mode: str | None, instance_fields) -> ml_collections.ConfigDict:
  """Sets config.model.midpg.generator_features for `mode`: () for 'scenario', the dataset's
  user/context `instance_fields` for 'instance' (per-example M, decomposed forward pass)."""
  mode = mode or DEFAULT_GENERATOR_MODE
  if mode not in GENERATOR_MODES:
    raise ConfigError(f'unknown config argument {mode!r}: the generator mode is one of '
                      f'{GENERATOR_MODES}')
  config.model.midpg.generator_features = tuple(instance_fields) if mode == 'instance' else ()
  return config


def synthetic_data() -> ml_collections.ConfigDict:
  """The built-in synthetic dataset (see midpg_jax/data/synthetic.py)."""
  d = ml_collections.ConfigDict()
  d.name = 'synthetic'
  d.seed = 0
  d.num_train = 400_000
  d.num_val = 100_000
  d.num_test = 100_000
  d.num_scenarios = 4
  d.scenario_weights = (0.45, 0.30, 0.20, 0.05)  # one small scenario
  d.base_rates = (0.04, 0.08, 0.02, 0.06)
  d.vocab_sizes = (100_000, 20_000, 5_000, 1_000, 200, 50, 20, 10)
  d.zipf_a = 1.1
  d.shifted_fields = (1, 3, 5)  # id distributions shift by scenario
  d.specific_fields = (2, 4, 6)  # carry scenario-specific effects
  d.num_dense = 4
  d.heterogeneity = 1.0  # 0 = scenarios identical given the features
  d.min_count = 1  # ids seen fewer times in the training split become id 0 (OOV); 1 = off
  d.field_effect_scale = 0.35
  d.cross_effect_scale = 0.4
  d.net_scale = 1.0
  return d


def model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.name = 'midpg'
  # Shared by every model of the zoo, so comparisons are at equal backbone size.
  m.embed_dim = 16
  m.hidden = (256, 128, 64)
  m.activation = 'relu'
  m.dropout = 0.0
  m.scenario_embed_dim = 16  # MI-DPG's generator input and the zoo's scenario embeddings
  # Per-scenario weights of every model (MI-DPG and the zoo): 'auto' (= 'tiled' at any S; rule in
  # midpg_jax/models/scenario_ops.py) | 'tiled' | 'ragged' | 'onehot' | 'masked'.
  m.scenario_matmul = 'auto'
  # Mixed precision of every model (midpg_jax/models/precision.py): compute dtype and the dtype
  # the parameters are stored and updated in; loss and MI term stay float32.
  m.dtype = 'float32'  # 'float32' | 'bfloat16'
  m.param_dtype = 'float32'
  # Each model's own hyper-parameters: the block `model.<name>.*` (e.g. model.midpg.rank,
  # model.star.aux_hidden), defaults and meaning beside the model's builder in
  # its module in midpg_jax/models/.
  for name, block in default_blocks().items():
    m[name] = block
  return m


def train_config() -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.batch_size = 1024
  t.eval_batch_size = 8192
  # One pass with a learning rate decaying linearly to 0 (docs/training.md): the
  # models peak at the end of their first pass and overfit the ids from the second one on. The
  # peak rate is the largest lever (scripts/overfit_study.py, validation AUC, seed 0): one pass
  # from 1e-3 under-trains (MI-DPG 0.714); from 8e-3 MI-DPG reaches 0.780 against 0.764 for two
  # passes at a constant 1e-3. Of 4e-3 / 8e-3 / 1.6e-2, SAR-Net is best at 8e-3, MI-DPG at 1.6e-2.
  t.num_epochs = 1
  t.optimizer = 'adam'
  t.learning_rate = 8e-3
  t.schedule = 'linear'  # 'constant' | 'cosine' | 'linear' (decay to 0 at the last step)
  t.warmup_steps = 0
  t.weight_decay = 0.0
  # λ of the L2 on the embedding rows each batch gathers (each distinct row once, / batch size);
  # 0 = off. See midpg_jax/train_state.py. 0.1 beat 0.01 and 0 on validation for MI-DPG and
  # SAR-Net alike (scripts/overfit_study.py).
  t.embedding_l2 = 0.1
  t.grad_clip_norm = 0.0  # 0 = off
  t.eval_every_steps = 130  # ~3 validations per pass of the default data; 0 = end of epoch
  t.early_stop_patience = 2  # evaluations without a better validation AUC; 0 = never stop
  t.log_every_steps = 50
  t.prefetch = 2
  t.sparse_embeddings = False  # True: lazy Adam on large tables' batch rows (sparse_optim.py)
  t.progress_bar = True
  return t


def mesh_config() -> ml_collections.ConfigDict:
  """The device mesh (midpg_jax/partitioning.py; docs/distributed.md).

  Two axes, (data, model), over every device of every process. -1 = the devices left over:
  (-1, 1) is pure data parallelism (the default, also right for one device); (-1, 2) splits each
  embedding table's rows over 2 devices and data-parallelises over the rest; (4, 2) needs exactly
  8 devices. On several processes keep the model axis inside one host (model <= devices per
  host). train.batch_size (global, over all processes) must divide by the data axis size.
  """
  m = ml_collections.ConfigDict()
  m.shape = (-1, 1)
  # (regex searched in the '/'-joined parameter path, PartitionSpec entries); first match wins,
  # no match = replicated. Default: embedding tables `embed_<field>` (vocab, E) split by rows on
  # `model`; a table whose vocab does not divide by the model axis is replicated (and logged).
  m.param_rules = ((r'(^|/)embed_[^/]*$', ('model', None)),)
  return m


@dataclasses.dataclass(frozen=True)
class Dataset:
  data: Callable[[], ml_collections.ConfigDict]  # config.data (keys: the dataset's module)
  instance_fields: tuple[str, ...]  # MI-DPG's user/context generator input under ':instance'


DATASETS = {
    # The built-in data has no named fields: its four smallest vocabularies stand for context
    # fields (chosen by cardinality, not by which fields the data's generator makes specific).
    'synthetic': Dataset(synthetic_data, ('c4', 'c5', 'c6', 'c7')),
    # The user profile fields (121 user category, 122 group, 124 gender, 125 age, 126-127
    # consumption levels, 128 occupation, 129 geography).
    'aliccp': Dataset(aliccp.data_config, ('121', '122', '124', '125', '126', '127', '128', '129')),
    # The public files name no field; these are a guess, not a known user/context set (override
    # with --config.model.midpg.generator_features=...).
    'aliexpress': Dataset(aliexpress.data_config, ('categorical_1', 'categorical_2',
                                                   'categorical_3', 'categorical_4')),
    # The only user-side field of the review records.
    'amazon': Dataset(amazon.data_config, ('reviewerID',)),
    # The user, where they live and the time of the rating.
    'douban': Dataset(scenario_wise_rec.douban_config, ('user_id', 'living_place', 'time_bin')),
    # User profile and hour of the context (not user_gender_id / context_page_id: either can be
    # the scenario field).
    'iaac': Dataset(iaac.data_config, ('user_age_level', 'user_occupation_id', 'user_star_level',
                                       'hour')),
    # The user (SubCategory is nested in the scenario field Category, so it is left out).
    'mind': Dataset(scenario_wise_rec.mind_config, ('User_ID',)),
}


def get_config(mode: str | None = None, dataset: str = 'synthetic') -> ml_collections.ConfigDict:
  """MI-DPG (every model's block included) on `dataset` (a key of DATASETS); mode: MI-DPG's
  generator input, 'scenario' or 'instance' (default DEFAULT_GENERATOR_MODE)."""
  if dataset not in DATASETS:
    raise ConfigError(f'unknown dataset {dataset!r}; known: {sorted(DATASETS)}')
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = DATASETS[dataset].data()
  config.model = model_config()
  config.train = train_config()
  config.mesh = mesh_config()
  return with_generator_mode(config, mode, DATASETS[dataset].instance_fields)

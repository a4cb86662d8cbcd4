"""Default config: MI-DPG on the built-in synthetic multi-scenario dataset.

Every value can be overridden on the command line, e.g.
  python train.py --config configs/default.py --config.model.rank=8 --config.train.num_epochs=2
"""

import ml_collections


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
  # MI-DPG (our reconstruction; see midpg_jax/models/midpg.py and shared/docs/MIDPG.md).
  m.scenario_embed_dim = 16
  m.rank = 4  # r: shared factors P (d_in, r), generated core (r, r), Q (r, d_out)
  m.specific_rank = 4  # r_s: per-scenario factors A_s (d_in, r_s), B_s (r_s, d_out)
  m.generator_hidden = (64,)
  m.generator_features = ()  # () = scenario only; field names make the generator instance-aware
  m.use_shared = True
  m.use_specific = True
  m.combine = 'modulate'  # 'modulate': W * (1 + M);  'replace': W = M (APG-style)
  m.scenario_matmul = 'ragged'  # 'ragged' (grouped matmul) or 'onehot'
  m.mi_estimator = 'infonce'  # 'infonce' | 'jsd' | 'mine' | 'none'
  m.mi_weight = 0.01  # lambda in  L = BCE + lambda * (-MI bound)
  m.mi_temperature = 0.1  # tau of the cosine critic
  m.mi_dim = 32
  return m


def train_config() -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.batch_size = 1024
  t.eval_batch_size = 8192
  t.num_epochs = 3
  t.optimizer = 'adam'
  t.learning_rate = 1e-3
  t.schedule = 'constant'  # or 'cosine'
  t.warmup_steps = 0
  t.weight_decay = 0.0
  t.grad_clip_norm = 0.0  # 0 = off
  t.eval_every_steps = 0  # 0 = at the end of each epoch
  t.early_stop_patience = 2  # evaluations without a better validation AUC; 0 = never stop
  t.log_every_steps = 50
  t.prefetch = 2
  t.progress_bar = True
  return t


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = synthetic_data()
  config.model = model_config()
  config.train = train_config()
  return config

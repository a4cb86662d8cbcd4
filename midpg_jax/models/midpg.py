"""MI-DPG: decomposable parameter generation with a mutual-information regulariser.

Cheng, Ding, Dong, He, Zhang, Mo. "MI-DPG: Decomposable Parameter Generation Network Based on Mutual
Information for Multi-Scenario Recommendation", CIKM 2023.

Only the paper's abstract is available. What it states: an auxiliary network generates a
scenario-conditioned dynamic weighting matrix, combined from decomposed scenario-specific and
scenario-shared low-rank matrices; the backbone's parameters are weighted by it; a mutual
information regulariser between the scenario-aware input and the weighting matrix diversifies the
scenarios' parameters. Everything below marked *[our reading]* is this project's reconstruction
(docs/midpg.md), not the paper's text; each choice is a config value.

Per modulated layer l (d_in -> d_out), scenario s, scenario-aware input z:

  C_l(z)  = I_r + g_l(z)                                   (r, r)     generated core
  M_l(s)  = P_l C_l(z) Q_l + A_{l,s} B_{l,s}               (d_in, d_out)
  h_l     = act(h_{l-1} (W_l ⊙ (1 + M_l(s))) + b_l)

* [our reading] The weighting matrix *multiplies* the backbone weight entry-wise (`combine =
  'modulate'`), so a rank-(r + r_s) M reaches every entry of a full-rank W. `combine = 'replace'`
  is the APG-style alternative W_l(s) = M_l(s) (rank-capped), kept for the ablation.
* [our reading] Q_l and B_{l,s} start at zero, so M = 0 and MI-DPG *is* the plain backbone at
  initialisation; the core starts at the identity (APG's habit) so the shared factor is learnt as
  a scenario-independent P Q first and then bent per scenario.
* [our reading] The MI regulariser scores the generated weighting matrices themselves: per layer
  a FIXED random bilinear sketch m_k = u_k^T M v_k (K = `mi_dim` entries, computed from the
  factors: (u_k^T P) C (Q v_k) + (u_k^T A_s)(B_s v_k)) of each scenario's M (scenario-only z) or
  of each example's M (instance-aware z; prototypes = per-scenario batch means), against a fixed
  random projection of z, by a cosine critic with temperature `mi_temperature`, in InfoNCE (or
  JSD / MINE, `mi_estimator`; `midpg_jax/mi.py`). No trainable head sits between the bound and
  M, so the bound rises only if the scenarios' M move apart (and towards their own z); at M = 0
  the critic is linear in the sketch, so the gradient reaches Q and B from the first step.
  Per layer the mean pairwise cosine distance between the scenarios' M is returned as
  `diagnostics` (logged as train/diversity_l<l>, with train/m_rms_l<l>).

Two computation paths, never a (B, d_in, d_out) tensor (`modulated.ModulatedDense`):
* scenario-only generator input (default): M takes S values per batch, so the S modulated weights
  (S, d_in, d_out) are built once per step and each row is multiplied by its scenario's weight
  through the path shared by every model, `model.scenario_matmul` (scenario_ops.py: 'auto' /
  'tiled' / 'ragged' / 'onehot' / 'masked'); the rows are laid out before the embedding lookup.
* instance-aware input (`generator_features` non-empty): the decomposed forward pass, costing
  r + r_s matmuls per layer, rows in batch order.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax import mi
from midpg_jax.errors import ConfigError
from midpg_jax.models.base import ScenarioModel, shared_fields
from midpg_jax.models.layers import activation
from midpg_jax.models.modulated import COMBINES, ModulatedDense, WeightGenerator
from midpg_jax.models.registry import register_model
from midpg_jax.models.scenario_ops import SCENARIO_MATMULS, make_routing

__all__ = ['MIDPG', 'ModulatedDense', 'WeightGenerator', 'COMBINES', 'SCENARIO_MATMULS']


class MIDPG(ScenarioModel):
  uses_scenario_path = True
  rank: int = 4
  specific_rank: int = 4
  generator_hidden: Sequence[int] = (64,)
  generator_features: Sequence[str] = ()
  use_shared: bool = True
  use_specific: bool = True
  combine: str = 'modulate'
  mi_estimator: str = 'infonce'
  mi_dim: int = 16  # K: sketch entries per layer
  mi_temperature: float = 0.5

  @nn.compact
  def __call__(self, batch, train: bool = False):
    num_scen = self.num_scenarios
    scenario = jnp.asarray(batch['scenario'], jnp.int32)  # (B,)
    instance = bool(self.generator_features)
    # Instance-aware cores are per example: rows stay in batch order ('onehot' routing is the
    # identity layout; its matmul is not used). Otherwise rows are laid out once, before the
    # embedding lookup, in the order of the scenario path.
    routing = make_routing(scenario, num_scen, 'onehot' if instance else self.scenario_matmul)
    counts = routing.counts
    x, fields = self.embed(routing.take_batch(batch))  # (N, d_0) in the routing's row order
    generator = WeightGenerator(len(self.hidden), self.rank, tuple(self.generator_hidden),
                                self.act, name='generator')
    if instance:
      unknown = set(self.generator_features) - set(fields)
      if unknown:
        raise ConfigError(f'model.midpg.generator_features names unknown fields {sorted(unknown)}; '
                         f'known: {sorted(fields)}')
      z = jnp.concatenate([self.embed_scenarios(scenario)]
                          + [fields[f] for f in self.generator_features], axis=-1)  # (B, d_z)
      cores = generator(z)  # (B, L, r, r)
    else:
      z = self.embed_scenarios(jnp.arange(num_scen))  # (S, d_z): z depends on the scenario only
      cores = generator(z)  # (S, L, r, r)

    if instance:
      core_scenario = scenario  # (B,): one generated core per example
      mean_cores = (jax.ops.segment_sum(cores, scenario, num_scen)
                    / jnp.maximum(counts, 1)[:, None, None, None].astype(cores.dtype))
      present = counts > 0
    else:
      core_scenario = None  # one core per scenario: the summary sketches the S scenarios' M
      mean_cores, present = cores, jnp.ones((num_scen,), bool)

    h = x
    widths = (x.shape[-1], *self.hidden)
    sketches, queries, diagnostics = [], [], {}
    for l, width in enumerate(self.hidden):
      layer = ModulatedDense(width, num_scen, self.rank, self.specific_rank, self.use_shared,
                             self.use_specific, self.combine, name=f'layer_{l}')
      sketch_u = jnp.asarray(mi.fixed_sketch(l, 0, (self.mi_dim, widths[l])))  # (K, d_in)
      sketch_v = jnp.asarray(mi.fixed_sketch(l, 1, (self.mi_dim, width)))  # (K, d_out)
      h, (sketch, diversity, rms) = layer(
          h, scenario, cores[:, l], 'instance' if instance else routing,
          summary_inputs=(cores[:, l] if instance else None, core_scenario, mean_cores[:, l],
                          present, sketch_u, sketch_v))
      h = self.drop(activation(self.act)(h), train)
      # The MI critic scores in float32 also under mixed precision (precision.py).
      sketches.append(sketch.astype(jnp.float32))  # (N, K)
      queries.append(z.astype(jnp.float32)
                     @ jnp.asarray(mi.fixed_sketch(l, 2, (self.mi_dim, z.shape[-1]))).T)
      diagnostics[f'diversity_l{l}'] = diversity
      diagnostics[f'm_rms_l{l}'] = rms
    logits = routing.restore(self.output_logit(h))  # (B,) batch order

    outputs = {'diagnostics': diagnostics}
    if self.mi_estimator != 'none':
      if instance:
        # Prototype of s: the mean sketch of the M generated for its examples in the batch.
        protos = [jax.ops.segment_sum(m, scenario, num_scen)
                  / jnp.maximum(counts, 1)[:, None].astype(m.dtype) for m in sketches]
        scores = mi.critic_scores(queries, protos, self.mi_temperature)  # (B, S)
        outputs['mi_bound'] = mi.mi_lower_bound(self.mi_estimator, scores, scenario, present)
      else:
        # The B rows' scores are the S scenarios' rows, each counted by its scenario's rows.
        scores = mi.critic_scores(queries, sketches, self.mi_temperature)  # (S, S)
        outputs['mi_bound'] = mi.mi_lower_bound(self.mi_estimator, scores, jnp.arange(num_scen),
                                                present, weights=counts)
    outputs['logits'] = logits
    return outputs


# Our reconstruction's switches (docs/midpg.md): each default is the measured or the paper's choice.
@register_model(
    'midpg',
    rank=4,  # r: shared factors P (d_in, r), generated core (r, r), Q (r, d_out)
    specific_rank=4,  # r_s: per-scenario factors A_s (d_in, r_s), B_s (r_s, d_out)
    generator_hidden=(64,),
    # () = scenario only; field names make the generator instance-aware (set by the config
    # argument ':instance' / ':scenario', see midpg_jax/config.py with_generator_mode).
    generator_features=(),
    use_shared=True,
    use_specific=True,
    combine='modulate',  # 'modulate': W * (1 + M);  'replace': W = M (APG-style)
    mi_estimator='infonce',  # 'infonce' | 'jsd' | 'mine' | 'none'
    mi_weight=0.01,  # lambda in  L = BCE + lambda * (-MI bound); read by the trainer (mi_weight)
    mi_temperature=0.5,  # tau of the cosine critic (low tau saturates the bound at ln S)
    mi_dim=16,  # K: entries per layer of the fixed random sketch u_k^T M v_k the critic scores
)
def _build(cfg, b, spec, base_rate):
  if float(b.mi_weight) < 0:
    raise ConfigError(f'{b.path("mi_weight")} must be >= 0, got {b.mi_weight}')
  if float(b.mi_temperature) <= 0:
    raise ConfigError(f'{b.path("mi_temperature")} must be positive, got {b.mi_temperature}')
  use_shared, use_specific = bool(b.use_shared), bool(b.use_specific)
  combine = b.choice('combine', COMBINES)
  if combine == 'replace' and not (use_shared or use_specific):
    raise ConfigError(f"{b.path('combine')}='replace' needs {b.path('use_shared')} or "
                      f"{b.path('use_specific')}")
  return MIDPG(spec=spec, rank=b.int_at_least('rank', 1),
               specific_rank=b.int_at_least('specific_rank', 1),
               generator_hidden=tuple(int(w) for w in b.generator_hidden),
               generator_features=b.fields('generator_features', spec),
               use_shared=use_shared, use_specific=use_specific, combine=combine,
               mi_estimator=b.choice('mi_estimator', mi.ESTIMATORS),
               mi_dim=b.int_at_least('mi_dim', 1), mi_temperature=float(b.mi_temperature),
               **shared_fields(cfg))

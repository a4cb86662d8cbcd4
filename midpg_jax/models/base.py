"""What every model of the zoo shares: the backbone sizes, the input prologue, the output head.

Every model (MI-DPG and each baseline) is a `ScenarioModel`: the same seven fields, so all of them
are built from the same shared config keys (`shared_fields`) and compared at equal size, and the
same first steps of `__call__` (`embed_routed` or `embed`), so the embedding tables are named
alike (`features/embed_<field>`, which partitioning and the row-sparse optimiser find by name).
A model adds its own hyper-parameters as fields of its subclass, each with its default.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import flax.linen as nn
import jax

from midpg_jax.data.schema import FeatureSpec
from midpg_jax.errors import ConfigError
from midpg_jax.models.layers import FeatureEmbedding, ScenarioEmbedding
from midpg_jax.models.scenario_ops import Routing, check_path, embed_and_route


class ScenarioModel(nn.Module):
  """Base of every model: `model.apply(variables, batch, train=...)` returns {'logits': (B,), ...}.

  scenario_matmul: how a model with per-scenario weights multiplies each row by its scenario's
  weight (scenario_ops.py); models without per-scenario weights embed in batch order and never
  read it.
  """

  spec: FeatureSpec
  hidden: Sequence[int] = (256, 128, 64)
  embed_dim: int = 16
  act: str = 'relu'
  dropout: float = 0.0
  scenario_embed_dim: int = 16  # width of the scenario embedding of the models that have one
  scenario_matmul: str = 'auto'
  # True for the models with per-scenario weights, whose rows go through `scenario_matmul`'s
  # routing (`embed_routed`); the others embed in batch order and ignore the path.
  uses_scenario_path: ClassVar[bool] = False

  @property
  def num_scenarios(self) -> int:
    return self.spec.num_scenarios

  # Helpers called inside a subclass's compact `__call__` (nowrap: the submodules they create
  # belong to that call, named as if written inline).
  @nn.nowrap
  def embed(self, batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(x (B, d_0), {field: its embedding (B, E)}) in batch order (submodule 'features')."""
    return FeatureEmbedding(self.spec, self.embed_dim, name='features')(batch)

  @nn.nowrap
  def embed_routed(self, batch) -> tuple[jax.Array, Routing]:
    """(x (N, d_0), routing): the rows laid out once for the scenario path, then embedded; the
    model returns `routing.restore(logits)` to give them back in batch order."""
    assert self.uses_scenario_path, f'{type(self).__name__} routes rows: set uses_scenario_path'
    return embed_and_route(self, batch)

  @nn.nowrap
  def embed_scenarios(self, scenario: jax.Array) -> jax.Array:
    """The scenario embedding (submodule 'scenario_embed') of each id in `scenario`."""
    return ScenarioEmbedding(self.num_scenarios, self.scenario_embed_dim,
                             name='scenario_embed')(scenario)

  @nn.nowrap
  def drop(self, h: jax.Array, train: bool) -> jax.Array:
    """Dropout after a hidden layer (none at the default rate 0)."""
    if self.dropout > 0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return h

  @nn.nowrap
  def output_logit(self, h: jax.Array) -> jax.Array:
    """The shared output layer (submodule 'output'): (N, d) -> (N,) logits."""
    return nn.Dense(1, name='output')(h)[:, 0]


def shared_fields(cfg) -> dict:
  """The `ScenarioModel` fields from the config keys every model shares (`config.model.*`),
  checked: one `ConfigError` line naming the key."""
  try:
    hidden = tuple(int(w) for w in cfg.hidden)
  except (TypeError, ValueError):
    raise ConfigError(f'model.hidden must be a tuple of widths, got {cfg.hidden!r}') from None
  if not hidden or min(hidden) <= 0:
    raise ConfigError(f'model.hidden must be positive widths, got {tuple(cfg.hidden)}')
  if cfg.embed_dim <= 0:
    raise ConfigError(f'model.embed_dim must be positive, got {cfg.embed_dim}')
  if not 0 <= cfg.dropout < 1:
    raise ConfigError(f'model.dropout must lie in [0, 1), got {cfg.dropout}')
  if int(cfg.scenario_embed_dim) <= 0:
    raise ConfigError(f'model.scenario_embed_dim must be a positive integer, got '
                      f'{cfg.scenario_embed_dim}')
  return dict(hidden=hidden, embed_dim=int(cfg.embed_dim), act=cfg.activation,
              dropout=float(cfg.dropout), scenario_embed_dim=int(cfg.scenario_embed_dim),
              scenario_matmul=check_path(cfg.scenario_matmul))


# Shared experts of the mixture-of-experts models (per level for PLE), the default of their blocks.
NUM_EXPERTS = 4

"""The one model registry: `build_model(config.model, spec, base_rate)` for every model of the zoo.

Every model is a Linen module (a `base.ScenarioModel`, but `logistic`) called as
`model.apply(variables, batch, train=...)`; it returns a dict with `logits` (B,) and, when it has
one, `mi_bound` (a scalar MI lower bound to maximise) and `diagnostics` (a dict of scalars the
trainer logs as train/<name>). Sizes shared by all models (embedding dim, hidden widths,
activation, dropout, the scenario-matmul path) come from the same top-level config keys
(`base.shared_fields`), so models are compared at equal backbone size. A model's own
hyper-parameters are its config block `config.model.<name>.*`: the defaults given to
`register_model` beside the model's class, in its own module (midpg_jax/config.py takes every
block from `default_blocks()`), read and checked by the model's builder only, so a new
hyper-parameter is one edit there. Importing this package registers every model.
"""

from __future__ import annotations

# Each module registers its model(s) on import; the paper and our choices are in its docstring.
from midpg_jax.models import adasparse, apg, hamur, hmoe, logistic, m2m, midpg  # noqa: F401
from midpg_jax.models import mlp, mmoe, pepnet, ple, sar_net, shared_bottom, star  # noqa: F401
from midpg_jax.models.registry import (build_model, default_blocks, mi_weight, model_names,
                                       register_model, registered)

__all__ = ['build_model', 'register_model', 'registered', 'model_names', 'default_blocks',
           'mi_weight']

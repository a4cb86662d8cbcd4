"""Mixed precision for every model: `model.dtype` (compute) and `model.param_dtype` (stored
parameters, the optimiser's master copy; default float32).

[our choice] One Linen variable transform (`nn.map_variables`) on the model class rather than a
`dtype` field threaded through every layer of thirteen models: each parameter is stored in
`param_dtype` and cast to `dtype` where a module reads it, inside the model (the gradient flows
back through the cast to the float32 master weights). The embedded features are cast to `dtype`
by `FeatureEmbedding`, and the layers keep their operands' dtype, so the backbone runs in `dtype`.
The outputs (logits, MI bound, diagnostics, auxiliary losses) are returned in float32, so the
loss and the MI term are computed in float32 by the trainer, and MI-DPG scores its MI critic in
float32 (`mi.critic_scores` on float32 sketches).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from midpg_jax.errors import ConfigError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def _dtype(key: str, value) -> jnp.dtype:
  name = getattr(value, 'name', None) or str(value)
  if name not in DTYPES:
    raise ConfigError(f'unknown model.{key} {value!r}; choose one of {sorted(DTYPES)}')
  return DTYPES[name]


def _cast_floats(tree, dtype):
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x,
      tree)


def with_precision(model: nn.Module, dtype='float32', param_dtype='float32') -> nn.Module:
  """`model` computing in `dtype` with parameters stored in `param_dtype` (float32, float32:
  the model itself)."""
  compute, stored = _dtype('dtype', dtype), _dtype('param_dtype', param_dtype)
  if compute == jnp.float32 and stored == jnp.float32:
    return model
  base = type(model)
  # Reads only: the parameters are created by the plain model (`init` below), so the transform
  # never runs the model twice (map_variables' own init mode re-runs it whenever a collection
  # such as batch_stats is mutable).
  mapped = nn.map_variables(base, 'params', trans_in_fn=lambda p: _cast_floats(p, compute))

  class Precise(mapped):
    def __call__(self, batch, train: bool = False):
      out = super().__call__(batch, train)
      return _cast_floats(out, jnp.float32)

    def init(self, *args, **kwargs):
      variables = model.init(*args, **kwargs)  # same parameter tree: no extra nesting
      return {**variables, 'params': _cast_floats(variables['params'], stored)}

  Precise.__name__ = Precise.__qualname__ = base.__name__
  fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.init and f.name not in ('parent', 'name')}
  return Precise(**fields)

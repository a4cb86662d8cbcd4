"""FLOPs: this machine's dense matmul rate, and FLOPs per example of a train step (analytic from
the layer shapes, and XLA's cost analysis of the compiled step), to say what fraction of the
machine's rate a step reaches."""

from __future__ import annotations

import time

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from benchmarks.speed.machine import torch, torch_device, torch_sync


def matmul_rate(n: int, reps: int, dtype: str = 'f32') -> dict:
  """GFLOP/s of an n x n matmul, JAX and torch alternating (median and best of `reps`)."""
  jdt = jnp.bfloat16 if dtype == 'bf16' else jnp.float32
  a = jax.random.normal(jax.random.key(0), (n, n), jdt)
  f = jax.jit(lambda x, y: x @ y)
  f(a, a).block_until_ready()
  fns = {'jax': lambda: f(a, a).block_until_ready()}
  if torch is not None:
    ta = torch.randn(n, n, device=torch_device(),
                     dtype=torch.bfloat16 if dtype == 'bf16' else torch.float32)
    torch.mm(ta, ta)
    fns['torch'] = lambda: (torch.mm(ta, ta), torch_sync())
  times = {k: [] for k in fns}
  for _ in range(max(reps, 5)):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      for _ in range(3):
        fn()
      times[k].append((time.perf_counter() - t0) / 3)
  flops = 2 * n ** 3
  return {k: {'gflops_median': flops / np.median(v) / 1e9, 'gflops_best': flops / min(v) / 1e9}
          for k, v in times.items()} | {'n': n, 'dtype': dtype}


def analytic_flops(config, spec) -> dict:
  """FLOPs per example from the layer shapes: matmuls only (2 per multiply-add).

  forward: embeddings are lookups (0); hidden layers sum 2 d_in d_out; output 2 d_last.
  training: 3x the forward (forward, input gradient, weight gradient). MI-DPG also builds its
  S modulated weights once per step (amortised over the batch; reported separately).
  """
  m = config.model
  d0 = (len(spec.cat_names) + len(spec.multi_names)) * int(m.embed_dim) + spec.num_dense
  dims = [d0, *[int(w) for w in m.hidden]]
  fwd = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:])) + 2 * dims[-1]
  S, r, rs = spec.num_scenarios, int(m.midpg.rank), int(m.midpg.specific_rank)
  per_step = sum(S * (2 * a * r * r + 2 * a * (r + rs) * b + 2 * a * b)
                 for a, b in zip(dims[:-1], dims[1:]))
  return {'forward_per_example': fwd, 'train_per_example': 3 * fwd,
          'midpg_weight_generation_per_step_fwd': per_step, 'input_width': d0}


def xla_flops(compiled) -> float | None:
  """FLOPs of one call of a compiled function, by XLA's cost analysis (best-effort)."""
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get('flops', float('nan')))
  except Exception:  # cost analysis is not implemented everywhere
    return None


def _jaxpr_matmul_flops(jaxpr) -> float:
  """Multiply-add FLOPs (x2) of every dot_general / ragged_dot in a jaxpr, sub-jaxprs included
  (pjit, custom_vjp, remat, ...); a ragged_dot counts each row once (its own group's weight)."""
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (lhs_c, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in lhs_c])
    elif name.startswith('ragged_dot'):
      m, k = eqn.invars[0].aval.shape
      total += 2.0 * m * k * eqn.outvars[0].aval.shape[-1]
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      total += _jaxpr_matmul_flops(sub)
  return total


def model_forward_flops(model_config, spec, sample_batch, variables) -> float:
  """Forward matmul FLOPs per example of any model of the zoo, read from its jaxpr (nothing is
  compiled): the model as written, with its per-scenario matmuls on the 'ragged' path (every row
  once with its own scenario's weight: no tile padding, no S-fold 'onehot' work). Work done once
  per step (e.g. MI-DPG's weight generation) is divided over the batch."""
  from midpg_jax.models import build_model
  cfg = model_config.copy_and_resolve_references()
  cfg.scenario_matmul = 'ragged'
  model = build_model(cfg, spec)
  fwd = lambda v, b: model.apply(v, b, train=False)  # noqa: E731
  closed = jax.make_jaxpr(fwd)(variables, sample_batch)
  return _jaxpr_matmul_flops(closed.jaxpr) / int(np.shape(sample_batch['scenario'])[0])

"""PyTorch contenders: the reference models (reference/torch_midpg.py, reference/torch_zoo.py)
trained eagerly or through torch.compile, on the same device string as the JAX side picks.

Same protocol as jax_side: `build`, `stage`, `warmup`, `train(k)`, `predict(k)`. bf16 is
`torch.autocast` (bf16 compute, float32 parameters and loss), the usual PyTorch mixed precision.
"""

from __future__ import annotations

import contextlib
import time

from midpg_jax.models import mi_weight
from benchmarks.speed.machine import torch, torch_device, torch_sync


class TorchContender:
  framework = 'torch'

  def __init__(self, name, config, compiled=False, model_name='midpg', dtype='f32', label=None,
               loop=None):
    self.name, self.label = name, label or name
    self.config = config.copy_and_resolve_references()
    self.config.model.name = model_name
    self.compiled, self.dtype, self.loop = compiled, dtype, loop
    self.device = torch_device()
    self.model = self.batches = None

  def _autocast(self):
    if self.dtype != 'bf16':
      return contextlib.nullcontext()
    return torch.autocast(self.device, dtype=torch.bfloat16)

  def _build_model(self, spec):
    """MI-DPG: sort + one matmul per scenario segment (segment sizes read on the host), in both
    modes: compiled with dynamic=True it graph-breaks there but does not recompile per batch, and
    it measured faster than compiling the static-shape 'masked' path (S x the FLOPs)."""
    sparse_rows = 0
    if self.config.train.get('sparse_embeddings', False):
      from midpg_jax.sparse_optim import MIN_ROWS
      sparse_rows = 0 if self.compiled else MIN_ROWS  # inductor has no sparse gradients
    return self.tm.build_torch_model(self.config.model, spec, scenario_matmul='segment',
                                     sparse_min_rows=sparse_rows)

  def build(self, spec, sample_batch=None):
    from reference import torch_midpg as tm
    self.tm = tm
    torch.manual_seed(0)
    model = self.model = self._build_model(spec).to(self.device).train()
    self.opt = tm.make_adam(model, lr=float(self.config.train.learning_rate))
    weight = mi_weight(self.config.model)

    def loss_of(b):
      with self._autocast():
        out = model(b)
      return tm.loss_fn({k: v.float() for k, v in out.items()}, b, weight)[0]

    def forward(b):
      with self._autocast():
        return torch.sigmoid(model(b)['logits'].float())

    if self.compiled:  # dynamic=True: scenario segment sizes change with every batch
      if hasattr(model, 'mi_bound'):
        # MI-DPG's MI term stays eager (one graph break): inductor's vectorised CPU code for its
        # backward aborts the process (`python -m scripts.torch_compile_repro`: train_default
        # aborts, train_mi_eager runs). Its FLOPs are under 1 % of the step's.
        model.mi_bound = torch.compiler.disable(model.mi_bound)
      loss_of, forward = torch.compile(loss_of, dynamic=True), torch.compile(forward, dynamic=True)
      self._opt_step = torch.compile(self.opt.step)
    else:
      self._opt_step = self.opt.step
    self._loss, self._forward, self.init_s = loss_of, forward, 0.0
    return self

  def stage(self, host_batches):
    self.batches = [self.tm.to_torch_batch(b, self.device) for b in host_batches]
    self.i = 0

  def warmup(self):
    t0 = time.perf_counter()
    self.train(2)
    self.predict(2)
    return time.perf_counter() - t0

  def train(self, k):
    for _ in range(k):
      b = self.batches[self.i % len(self.batches)]
      self.i += 1
      self.opt.zero_grad(set_to_none=True)
      loss = self._loss(b)
      loss.backward()
      self._opt_step()
    torch_sync()

  def predict(self, k):
    self.model.eval()  # inference reads STAR's running statistics, as the JAX predict step does
    try:
      with torch.no_grad():
        for j in range(k):
          out = self._forward(self.batches[j % len(self.batches)])
      torch_sync()
      return out
    finally:
      self.model.train()


class ZooTorchContender(TorchContender):
  """A zoo model's PyTorch reference in one scenario-loop form ('subset' or 'masked')."""

  def __init__(self, name, config, model_name, compiled=False, loop='subset', dtype='f32',
               label=None):
    super().__init__(name, config, compiled=compiled, model_name=model_name, dtype=dtype,
                     label=label, loop=loop)

  def _build_model(self, spec):
    from reference import torch_zoo as tz
    return tz.build_torch_zoo_model(self.config.model, spec, self.loop)


def require_torch(what: str) -> None:
  if torch is None:
    raise SystemExit(f'{what} compares against PyTorch: install torch '
                     "(pip install '.[bench]' or requirements-bench.txt)")

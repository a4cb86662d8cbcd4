"""Where torch.compile of the MI-DPG reference aborts (`free(): invalid next size`) on this CPU.

Each variant runs in its own subprocess (the abort kills the process), at a small batch:
  python -m scripts.torch_compile_repro            # every variant, one line each: ok / exit code
  python -m scripts.torch_compile_repro A B ...    # these variants, each in its own subprocess
Variants narrow the graph down: forward only or a train step, which scenario path, the MI term,
whether the optimizer step is compiled, dynamic shapes, and inductor settings (cpp codegen
off-loaded to other options).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

VARIANTS = {
    # name: (what is compiled, model kwargs, torch.compile kwargs, inductor config)
    'train_default': ('train', {}, {'dynamic': True}, {}),
    'forward_only': ('forward', {}, {'dynamic': True}, {}),
    'forward_static': ('forward', {}, {}, {}),
    'forward_masked_path': ('forward', {'scenario_matmul': 'masked'}, {}, {}),
    'forward_no_mi': ('forward', {'mi_estimator': 'none'}, {'dynamic': True}, {}),
    'forward_aot_eager': ('forward', {}, {'dynamic': True, 'backend': 'aot_eager'}, {}),
    'forward_simdlen1': ('forward', {}, {'dynamic': True}, {'cpp.simdlen': 1}),
    'forward_no_vec_isa': ('forward', {}, {'dynamic': True}, {'cpp.vec_isa_ok': False}),
    'forward_no_mkldnn': ('forward', {}, {'dynamic': True}, {'cpp.weight_prepack': False}),
    'forward_cpp_threads1': ('forward', {}, {'dynamic': True}, {'cpp.threads': 1}),
    'train_no_vec_isa': ('train', {}, {'dynamic': True}, {'cpp.vec_isa_ok': False}),
    # Which part of the train step: autograd's graphs without inductor, static shapes, no MI term,
    # the masked scenario path instead of the segment loop.
    'train_aot_eager': ('train', {}, {'dynamic': True, 'backend': 'aot_eager'}, {}),
    'train_static': ('train', {}, {}, {}),
    'train_no_mi': ('train', {'mi_estimator': 'none'}, {'dynamic': True}, {}),
    'train_masked_path': ('train', {'scenario_matmul': 'masked'}, {'dynamic': True}, {}),
    'train_simdlen256': ('train', {}, {'dynamic': True}, {'cpp.simdlen': 256}),  # AVX2, not AVX-512
    # The benchmark's workaround: the MI term (model.mi_bound) runs eagerly, the rest compiled.
    'train_mi_eager': ('train', {'mi_eager': True}, {'dynamic': True}, {}),
    'train_sketch_eager': ('train', {'sketch_eager': True}, {'dynamic': True}, {}),
}


def run_variant(name: str, batch: int = 512) -> None:
  import torch
  import torch._inductor.config as ic
  from midpg_jax.config import get_config
  from benchmarks.speed.jax_side import make_data
  from reference import torch_midpg as tm
  what, model_kw, compile_kw, inductor = VARIANTS[name]
  for key, value in inductor.items():
    obj = ic
    *parents, leaf = key.split('.')
    for p in parents:
      obj = getattr(obj, p)
    setattr(obj, leaf, value)
  config = get_config()
  ds, host = make_data(config, batch)
  torch.manual_seed(0)
  model = tm.build_torch_model(config.model, ds.spec,
                               scenario_matmul=model_kw.get('scenario_matmul', 'segment'))
  if 'mi_estimator' in model_kw:
    model.mi_estimator = model_kw['mi_estimator']
  if model_kw.get('mi_eager'):
    model.mi_bound = torch.compiler.disable(model.mi_bound)
  if model_kw.get('sketch_eager'):
    for layer in model.layers:
      layer.sketch = torch.compiler.disable(layer.sketch)
  batches = [tm.to_torch_batch(b) for b in host]
  opt = tm.make_adam(model, lr=1e-3)
  if what == 'forward':
    f = torch.compile(lambda b: model(b)['logits'], **compile_kw)
    with torch.no_grad():
      for b in batches:
        f(b)
  else:
    loss = torch.compile(lambda b: tm.loss_fn(model(b), b, 0.1)[0], **compile_kw)
    for b in batches:
      opt.zero_grad(set_to_none=True)
      loss(b).backward()
      opt.step()
  print(f'{name}: ok')


_CHILD = 'TORCH_COMPILE_REPRO_CHILD'


def main() -> None:
  if os.environ.get(_CHILD):
    return run_variant(sys.argv[1])
  for name in sys.argv[1:] or VARIANTS:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, '-m', 'scripts.torch_compile_repro', name],
                       capture_output=True, text=True, env={**os.environ, _CHILD: '1'})
    tail = (p.stdout + p.stderr).strip().splitlines()[-1:] or ['']
    print(f'{name:30s} exit {p.returncode:4d} ({time.perf_counter() - t0:5.0f}s) {tail[0][:150]}',
          flush=True)


if __name__ == '__main__':
  main()

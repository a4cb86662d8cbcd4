"""Single-device train-step time of two checkouts, measured side by side: processes alternate
A, B, A, B, ... so a shared machine's load falls on both alike.

  python scripts/step_time_ab.py --a <checkout before> --b . [--models midpg,star | all] [--rounds 5]

Each process imports midpg_jax from its checkout (PYTHONPATH), compiles the train step of each
model at --batch_size on the default config's sizes and times --reps windows of --steps steps; a
round's time is its fastest window (the machine's load only ever adds time). The table gives each
model's median over rounds, the spread of the rounds, the ratio B / A, and whether XLA compiled
the same program for both (the optimised HLO without its metadata and numbering): where it did,
any difference in time is the machine's, not the code's.
"""

import argparse
import json
import os
import subprocess
import sys


def child(models, batch_size, steps, reps):
  import time
  # Every entry point sets the package's XLA flags before JAX starts (older checkouts did it on
  # import); without this, B would be timed without them and A with.
  import midpg_jax
  try:
    from midpg_jax import xla_defaults
    xla_defaults.apply()
  except ImportError:  # a checkout from before the flags existed
    pass
  del midpg_jax
  import jax
  import numpy as np
  try:
    from midpg_jax.config import get_config
  except ImportError:  # a checkout from before the config builders moved into the package
    from configs.default import get_config
  from midpg_jax import build
  from midpg_jax.data import load_dataset, pipeline
  from midpg_jax.models import mi_weight
  from midpg_jax.train_state import make_train_step, model_inputs
  c = get_config()
  c.data.num_train, c.data.num_val, c.data.num_test = 8 * batch_size, 1000, 1000
  c.train.batch_size = batch_size
  dataset = load_dataset(c.data)
  if models == ['all']:
    from midpg_jax.models.registry import model_names
    models = model_names()
  out = {}
  for name in models:
    c.model.name = name
    _, model, tx, state, _ = build.setup(c, dataset)
    step = jax.jit(make_train_step(model, tx, mi_weight(c.model)))
    batches = [jax.device_put(model_inputs(b)) for b in pipeline.train_batches(
        dataset.splits['train'], batch_size, seed=0, epoch=0)]
    state, m = step(state, batches[0])
    jax.block_until_ready(m)
    times = []
    for r in range(reps):
      t0 = time.perf_counter()
      for i in range(steps):
        state, m = step(state, batches[i % len(batches)])
      jax.block_until_ready(m)
      times.append((time.perf_counter() - t0) / steps)
    out[name] = {'seconds': float(np.min(times)),
                 'program': program_fingerprint(step.lower(state, batches[0]).compile().as_text())}
  print(json.dumps(out))


def program_fingerprint(hlo_text: str) -> str:
  """The optimised HLO without what differs between two checkouts of the same program: source
  locations (metadata, the stack-frame tables) and the numbering of instructions."""
  import hashlib
  import re
  lines = [re.sub(r'\.\d+', '', re.sub(r', metadata=\{[^}]*\}', '', line))
           for line in hlo_text.splitlines()
           if line.startswith(('HloModule', 'ENTRY', '%', 'ROOT', '  ', '}'))
           and not re.match(r'^\s*\d+ [{"]', line)]
  return hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:12]


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--a', required=True)
  p.add_argument('--b', required=True)
  p.add_argument('--models', default='mlp,midpg,shared_bottom,star,mmoe,apg,hamur',
                 help="comma-separated model names, or 'all' (every registered model)")
  p.add_argument('--batch_size', type=int, default=4096)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--rounds', type=int, default=5)
  p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = p.parse_args()
  models = args.models.split(',')
  if args.child:
    return child(models, args.batch_size, args.steps, args.reps)
  times = {'a': [], 'b': []}
  for r in range(args.rounds):
    for side in ('a', 'b'):
      env = dict(os.environ, PYTHONPATH=os.path.abspath(getattr(args, side)), JAX_PLATFORMS='cpu')
      proc = subprocess.run([sys.executable, __file__, '--child', '--a', '', '--b', '',
                             '--models', args.models, '--batch_size', str(args.batch_size),
                             '--steps', str(args.steps), '--reps', str(args.reps)],
                            env=env, capture_output=True, text=True, check=True)
      times[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
      print(f'round {r} {side}: ' + ', '.join(f'{k} {v["seconds"] * 1e3:.1f} ms'
                                              for k, v in times[side][-1].items()), flush=True)
  import numpy as np
  print('\n| model | A ms/step | B ms/step | B / A | rounds A (min-max) | rounds B (min-max) '
        '| same program |\n|---|---|---|---|---|---|---|')
  for name in times['a'][0]:
    a, b = ([t[name]['seconds'] * 1e3 for t in times[side]] for side in ('a', 'b'))
    same = {t[name]['program'] for t in times['a']} == {t[name]['program'] for t in times['b']}
    print(f'| {name} | {np.median(a):.1f} | {np.median(b):.1f} | {np.median(b) / np.median(a):.3f} '
          f'| {min(a):.1f}-{max(a):.1f} | {min(b):.1f}-{max(b):.1f} | {"yes" if same else "no"} |')


if __name__ == '__main__':
  main()

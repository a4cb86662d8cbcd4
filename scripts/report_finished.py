"""The tables of a comparison from the runs that finished, training nothing: for a comparison cut
short (or trained in parts by separate processes, each with its own runs.csv).

  python -m scripts.report_finished ablation runs/report_ablation \
      runs/compare_ablation runs/compare_ablation_extra [--seeds 0,1]

Merges the source folders' runs.csv into the output folder's (runs are keyed by their config's
fingerprint), keeps the models and variants of the config that have a finished run for every
seed, and runs the comparison there: everything it needs is in runs.csv, so it writes results.md
and the other tables with the comparison's own report writer.
"""

import argparse
import os

import ml_collections

from midpg_jax import compare
from midpg_jax.compare import config as compare_config
from midpg_jax.compare.plan import RunStore, fingerprint, variant_config, variants


def main():
  p = argparse.ArgumentParser()
  p.add_argument('comparison', help='a name of midpg_jax.compare.config.COMPARISONS')
  p.add_argument('out')
  p.add_argument('sources', nargs='+')
  p.add_argument('--seeds', default='0')
  args = p.parse_args()
  b = compare_config.get_config(args.comparison)
  b.grid, b.heterogeneity_sweep, b.learning_curve = None, (), None
  b.seeds = tuple(int(s) for s in args.seeds.split(','))
  b.compilation_cache_dir = ''
  os.makedirs(args.out, exist_ok=True)
  store = RunStore(os.path.join(args.out, 'runs.csv'))
  for source in args.sources:
    for fp, row in RunStore(os.path.join(source, 'runs.csv')).rows.items():
      if store.get(fp) is None:
        store.add(row)
  done = lambda name, ov: all(store.get(fingerprint(variant_config(b, name, ov, s))) is not None
                              for s in b.seeds)
  kept = [name for name, ov in variants(b) if done(name, ov)]
  print(f'finished at seeds {b.seeds}: {kept}; left out: '
        f'{[n for n, _ in variants(b) if n not in kept]}')
  b.models = tuple(m for m in b.models if m in kept)
  b.variants = ml_collections.ConfigDict({k: v for k, v in b.variants.items() if k in kept})
  if b.get('bootstrap', None) and b.bootstrap.reference not in kept:
    b.bootstrap = None
  b.output_dir = args.out
  result = compare.run(b)
  assert result['trained'] == 0
  print(result['markdown'])


if __name__ == '__main__':
  main()

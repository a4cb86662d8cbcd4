"""Measures `midpg-predict` end to end: raw Ali-CCP-format CSV in, CSV out, the default MI-DPG.

  python -m scripts.bench_predict --rows 1000000 [--work /tmp/midpg_bench_predict] [--repeats 2]

Makes what is missing under --work (kept for the next call): a run of the default model
(configs/aliccp.py, MI-DPG 256-128-64) trained for one epoch on the Ali-CCP sample in
../shared (speed does not depend on what it learnt), and an input CSV of --rows rows whose ids
are drawn from the sample's columns plus ~10 % unseen ids (the out-of-vocabulary path) and whose
dense values are resampled. Then runs `midpg-predict` (midpg_jax.commands.predict) in a fresh process
--repeats times (the first call may compile; the compile cache is under --work) and prints per
call: rows/s inside predict_file and for the whole process, rows per CPU-second (process CPU
time), CPU-s / wall-s (how many cores the scoring kept busy) and the peak RSS.

Extra arguments after `--` go to midpg-predict (e.g. `-- --batch_size 8192`).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..',
                       'shared', 'data', 'Scenario-Wise-Rec')


def make_run(work: str, samples: str) -> str:
  """A run of the default model trained one epoch on the Ali-CCP sample (a few seconds of
  training; mostly compile)."""
  run_dir = os.path.join(work, 'run')
  if os.path.isfile(os.path.join(run_dir, 'final_metrics.json')):
    return run_dir
  from midpg_jax import config
  from midpg_jax import trainer
  c = config.get_config(dataset='aliccp')
  c.data.manual_dir = samples
  for split, name in (('train', 'train'), ('validation', 'val'), ('test', 'test')):
    c.data[f'{split}_files'] = f'ali_ccp_{name}_sample.csv'
  c.data.prepared_dir = os.path.join(work, 'prepared')
  c.data.clicked_only, c.data.min_count, c.data.progress = False, 1, False
  c.train.batch_size, c.train.num_epochs, c.train.progress_bar = 32, 1, False
  trainer.train_and_evaluate(c, run_dir)
  return run_dir


def make_input(path: str, rows: int, samples: str) -> None:
  """An Ali-CCP-format CSV of `rows` rows resampled from the training sample's columns."""
  import pyarrow as pa
  import pyarrow.csv as pacsv
  src = pacsv.read_csv(os.path.join(samples, 'ali_ccp_train_sample.csv'))
  rng = np.random.default_rng(0)
  cols = {}
  for name in src.column_names:
    v = src.column(name).to_numpy()
    if name.startswith('D'):  # dense: resampled and rescaled
      cols[name] = np.round(rng.choice(v, rows) * rng.uniform(0.5, 1.5, rows), 4)
    elif name in ('click', 'purchase'):
      cols[name] = rng.choice(v, rows)
    elif name == '301':  # the scenario field
      cols[name] = rng.integers(1, 4, rows)
    else:  # ids: seen ones, and ~10 % unseen (out of vocabulary)
      cols[name] = np.where(rng.random(rows) < 0.1, rng.integers(0, 100000, rows),
                            rng.choice(v, rows))
  tmp = path + '.tmp'
  pacsv.write_csv(pa.table(cols), tmp, pacsv.WriteOptions(quoting_style='none'))
  os.replace(tmp, path)


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--rows', type=int, default=1_000_000)
  p.add_argument('--work', default='/tmp/midpg_bench_predict')
  p.add_argument('--samples', default=SAMPLES, help='folder of ali_ccp_*_sample.csv')
  p.add_argument('--repeats', type=int, default=2)
  p.add_argument('--id_columns', default='101,205')
  args = p.parse_args(argv)
  os.makedirs(args.work, exist_ok=True)
  run_dir = make_run(args.work, args.samples)
  input_path = os.path.join(args.work, f'input_{args.rows}.csv')
  if not os.path.isfile(input_path):
    start = time.perf_counter()
    make_input(input_path, args.rows, args.samples)
    print(f'wrote {input_path} ({os.path.getsize(input_path) / 1e6:.0f} MB) in '
          f'{time.perf_counter() - start:.0f}s', flush=True)
  output = os.path.join(args.work, 'scores.csv')
  cmd = [sys.executable, '-m', 'midpg_jax.commands.predict', '--workdir', run_dir, '--input',
         input_path, '--output', output, '--id_columns', args.id_columns, '--noprogress',
         '--compile_cache', os.path.join(args.work, 'xla'), *extra]
  print('$', ' '.join(cmd), flush=True)
  for repeat in range(args.repeats):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
      sys.exit(f'midpg-predict failed:\n{proc.stderr[-3000:]}')
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # "N rows scored in Xs (... rows/s; Y CPU-s, ...)": predict_file's own clock.
    m = re.search(r'([\d,]+) rows scored in ([\d.]+)s .*?; ([\d.]+) CPU-s', proc.stdout)
    rows, inner_wall, inner_cpu = int(m.group(1).replace(',', '')), float(m.group(2)), float(
        m.group(3))
    # ru_maxrss of children is the largest child so far (KiB on Linux).
    print(f'call {repeat + 1}: predict_file {rows / inner_wall:,.0f} rows/s '
          f'({inner_wall:.2f} s, {inner_cpu:.2f} CPU-s = {rows / inner_cpu:,.0f} rows per CPU-s, '
          f'CPU/wall {inner_cpu / inner_wall:.2f}); whole process {rows / wall:,.0f} rows/s '
          f'({wall:.2f} s, {cpu:.2f} CPU-s, CPU/wall {cpu / wall:.2f}); peak RSS '
          f'{after.ru_maxrss / 2**20:.2f} GB', flush=True)


if __name__ == '__main__':
  main()

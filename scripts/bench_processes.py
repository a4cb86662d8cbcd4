"""Several real processes each reading only its share of every shuffled training batch: their rates,
their resident memory, and a check that together they read exactly the single-process batches.

  python -m scripts.bench_processes --prepared_dir /tmp/aliccp20m_prep --processes 2 --batches 200

Each process memory-maps the prepared training split itself and runs `pipeline.train_batches` with
its `process_index` (what a multi-host run does: no process reads another's rows), without JAX.
The first process of the same count does the whole global batches alone, for comparison. The
check: the label sums and row counts of the shares add up to those of the global batches.

"Resident" pages of the prepared files are what the kernel mapped into the process, not the bytes
it read: on this machine (20M rows) 10 batches of 4096 rows leave 1.0 GB of the 1.76 GB cat.npy
mapped (the kernel maps large page-cache folios around each row touched; madvise(MADV_RANDOM)
changed nothing), so a half share maps about as many pages as a whole batch. The page cache is
shared, so processes on one host do not hold the data twice.
"""

import argparse
import multiprocessing
import os
import time

import numpy as np

from midpg_jax.data import pipeline, store


def _data_pages_mb(prepared_dir: str) -> float:
  """Resident pages of this process's mappings of the prepared files: what it has read."""
  total_kb, in_data = 0, False
  with open('/proc/self/smaps') as f:
    for line in f:
      first = line.split(maxsplit=6)
      if '-' in first[0] and len(first) >= 5:  # a mapping's header line
        in_data = len(first) == 6 and first[5].strip().startswith(prepared_dir)
      elif in_data and first[0] == 'Rss:':
        total_kb += int(first[1])
  return round(total_kb / 1024, 1)


def read_share(prepared_dir: str, batch_size: int, batches: int, index: int, count: int,
               epoch: int) -> dict:
  """Reads process `index` of `count`'s share of the first `batches` global batches."""
  _, splits = store.load_prepared(prepared_dir)
  train = splits['train']
  rows, label_sum = 0, 0.0
  start = time.perf_counter()
  for _, batch in zip(range(batches), pipeline.train_batches(
      train, batch_size, 0, epoch, process_index=index, process_count=count)):
    rows += len(batch['label'])
    label_sum += float(np.sum(batch['label'], dtype=np.float64))
  seconds = time.perf_counter() - start
  return {'process': index, 'rows': rows, 'seconds': round(seconds, 2),
          'rows_per_s': round(rows / seconds), 'label_sum': label_sum,
          'data_mb': _data_pages_mb(os.path.abspath(prepared_dir)),
          'training_rows': len(train['label'])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--prepared_dir', required=True)
  parser.add_argument('--processes', type=int, default=2)
  parser.add_argument('--batch_size', type=int, default=4096)
  parser.add_argument('--batches', type=int, default=200)
  parser.add_argument('--epoch', type=int, default=5, help='whose shuffle order (pages not yet '
                      'touched by an earlier epoch of the same order)')
  args = parser.parse_args()
  ctx = multiprocessing.get_context('spawn')  # fresh processes: nothing mapped from the parent
  with ctx.Pool(1) as pool:
    alone = pool.apply(read_share, (args.prepared_dir, args.batch_size, args.batches, 0, 1,
                                    args.epoch))
  with ctx.Pool(args.processes) as pool:
    shares = pool.starmap(read_share, [(args.prepared_dir, args.batch_size, args.batches, i,
                                        args.processes, args.epoch + 1)
                                       for i in range(args.processes)])
  with ctx.Pool(1) as pool:  # the same epoch as the shares, for the check
    check = pool.apply(read_share, (args.prepared_dir, args.batch_size, args.batches, 0, 1,
                                    args.epoch + 1))
  print(f'{alone["training_rows"]:,} training rows, global batch {args.batch_size}, '
        f'{args.batches} batches')
  print(f'1 process, whole batches:   {alone["rows_per_s"]:10,} rows/s, '
        f'{alone["data_mb"]:8.1f} MB of the prepared files resident')
  for s in shares:
    print(f'process {s["process"]} of {args.processes}, its share: {s["rows_per_s"]:10,} rows/s, '
          f'{s["data_mb"]:8.1f} MB of the prepared files resident')
  total = sum(s['rows'] for s in shares)
  slowest = max(s['seconds'] for s in shares)
  print(f'{args.processes} processes together: {total / slowest:10,.0f} rows/s of global batches '
        '(all rows read / the slowest share\'s seconds)')
  same = (total == check['rows'] and
          abs(sum(s['label_sum'] for s in shares) - check['label_sum']) < 1e-6)
  print(f'shares add up to the global batches (rows {total:,} vs {check["rows"]:,}, label sum '
        f'{sum(s["label_sum"] for s in shares):.0f} vs {check["label_sum"]:.0f}): {same}')


if __name__ == '__main__':
  main()

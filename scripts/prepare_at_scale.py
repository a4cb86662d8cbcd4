"""Measures streaming preparation on a large Ali-CCP-format dataset: wall time, CPU time, rows/s and
peak resident memory.

  python -m scripts.make_aliccp_like --out /tmp/aliccp20m --train_rows 20000000   # 2.8 GB, once
  python -m scripts.prepare_at_scale --manual_dir /tmp/aliccp20m --prepared_dir /tmp/aliccp20m_prep

Prepares the entire space (`clicked_only=False`, so every generated row is kept: 20M training
rows), always from scratch (`rebuild=True`), without progress bars. Peak memory is the process's
high-water mark (ru_maxrss = VmHWM), which includes Python, numpy and pyarrow themselves (about
0.1 GB before any data is read). Then loads it as training does (memory-mapped, every column
validated) and reports that time and the resident memory after it: memory-mapped pages that were
read count as resident (RssFile) but are file cache the kernel can drop.
"""

import argparse
import cProfile
import json
import pstats
import os
import resource
import sys
import time

from midpg_jax import config
from midpg_jax.data import aliccp, load_dataset, prepare


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def _rss_now() -> dict:
  """Resident memory now, split into anonymous (allocated) and file-backed (memory-mapped data,
  reclaimable by the kernel)."""
  with open('/proc/self/status') as f:
    return {k: v.strip() for k, v in (line.split(':', 1) for line in f)
            if k in ('RssAnon', 'RssFile')}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--manual_dir', required=True)
  parser.add_argument('--prepared_dir', required=True)
  parser.add_argument('--clicked_only', action='store_true', help='the CVR space instead')
  parser.add_argument('--profile', default='', help='write a cProfile of the preparation, timed '
                      'in CPU seconds (parsing threads included), to this file; print its top 25')
  args = parser.parse_args()
  cfg = config.get_config(dataset='aliccp').data
  cfg.manual_dir, cfg.prepared_dir = args.manual_dir, args.prepared_dir
  cfg.clicked_only, cfg.rebuild, cfg.progress = args.clicked_only, True, False
  before = peak_rss_gb()
  wall, cpu = time.perf_counter(), time.process_time()
  # Prepares (load_dataset would also validate every column: timed apart). CPU time, not wall
  # time, in the profile: on a shared machine wall time mostly measures the other jobs.
  profile = cProfile.Profile(time.process_time) if args.profile else None
  (profile.runcall if profile else lambda f, c: f(c))(aliccp.load, cfg)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  if profile:
    profile.dump_stats(args.profile)
    pstats.Stats(args.profile, stream=sys.stderr).sort_stats('tottime').print_stats(25)
  prepare_peak = peak_rss_gb()
  cfg.rebuild = False
  check = time.perf_counter()
  dataset = load_dataset(cfg)  # reused: memory-maps and validates every column
  check = time.perf_counter() - check
  meta = prepare.read_meta(args.prepared_dir)
  rows_read = sum(s['rows'] for s in meta['splits'].values())
  result = {
      'rows_read': rows_read, 'training_rows': len(dataset.splits['train']['label']),
      'source_gb': round(sum(s['bytes'] for s in meta['sources']) / 1e9, 2),
      'wall_s': round(wall, 1), 'cpu_s': round(cpu, 1),
      'rows_per_s_wall': round(rows_read / wall), 'rows_per_cpu_s': round(rows_read / cpu),
      'peak_rss_gb': round(prepare_peak, 2), 'rss_before_reading_gb': round(before, 2),
      'load_and_validate_s': round(check, 1), 'peak_rss_after_validate_gb': round(peak_rss_gb(), 2),
      'rss_now': _rss_now(),
      'load_avg_1min_after': os.getloadavg()[0],
      'vocab_sizes': dict(zip(dataset.spec.cat_names, dataset.spec.cat_vocab_sizes))}
  print(json.dumps(result, indent=1))


if __name__ == '__main__':
  main()

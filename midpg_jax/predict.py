"""Scoring raw rows with a trained run, streaming: CSV in, CSV or Parquet out.

  midpg-predict --workdir runs/aliccp --input new_rows.csv --output scores.parquet \
      [--id_columns user_id,item_id] [--checkpoint best]

The input has the source files' columns and value forms (extra columns such as labels are
ignored); each chunk of rows is read and checked (a bad value is an error naming the file, line and
column, as in preparation), encoded with the Encoder that preparation fitted, scored by the run's
best checkpoint and appended to the output, which gets the `--id_columns` (copied as they are) and
`probability`; without id columns, `row` (0-based index of the data row in the input) instead.
Memory stays bounded by a few chunks (`--chunk_bytes` of CSV each), whatever the input's size.
Reading and encoding the next chunk (pyarrow and numpy, in a thread) overlaps scoring this one.
The output is written to `<output>.tmp` and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from midpg_jax.errors import DataError

OUTPUT_FORMATS = ('.csv', '.parquet')


def _chunks(run, path: str, id_columns: list[str], chunk_bytes: int, progress: bool,
            delimiter: str) -> Iterator[tuple[dict, dict, int]]:
  """(encoded columns, id columns, first line) per chunk of the input."""
  from midpg_jax.api import feature_kinds
  from midpg_jax.data.reader import iter_csv
  encoder = run.encoder
  kinds = feature_kinds(encoder)
  for c in id_columns:
    kinds.setdefault(c, 'str')  # an id column that is also a feature keeps its feature's kind
  for columns, line in iter_csv(path, kinds, delimiter=delimiter, block_size=chunk_bytes,
                                progress=progress, desc=f'score {os.path.basename(path)}'):
    encoded = encoder.encode(columns, source=path, first_line=line, with_label=False)
    yield encoded, {c: columns[c] for c in id_columns}, line


class _Writer:
  """Appends tables to a CSV or Parquet file (chosen by the extension)."""

  def __init__(self, path: str):
    self.path, self.tmp = path, path + '.tmp'
    self.parquet = path.endswith('.parquet')
    self._writer = None

  def write(self, table: pa.Table) -> None:
    if self._writer is None:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      if self.parquet:
        import pyarrow.parquet as pq
        self._writer = pq.ParquetWriter(self.tmp, table.schema)
      else:
        self._writer = pacsv.CSVWriter(self.tmp, table.schema)
    self._writer.write_table(table)

  def close(self, complete: bool) -> None:
    if self._writer is not None:
      self._writer.close()
    if complete and self._writer is not None:
      os.replace(self.tmp, self.path)
    elif os.path.exists(self.tmp):
      os.remove(self.tmp)


# Rows per model call. The default MI-DPG's 'tiled' path pads each scenario's rows to whole tiles
# (XLA's cost analysis: 25 % extra rows at 2048, 12.5 % at 4096). Measured on
# 2 shared CPU cores, best of 4 interleaved passes over 64k rows (rows per CPU-second): 1024: 86k,
# 2048: 100k, 4096: 113k, 8192: 82k.
DEFAULT_BATCH_SIZE = 4096


def predict_file(run, input_path: str, output_path: str, *, id_columns=(),
                 chunk_bytes: int = 1 << 24, progress: bool = True, delimiter: str = ',',
                 batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
  """Scores every row of `input_path` into `output_path`; returns {'rows', 'seconds',
  'cpu_seconds'} (CPU time of all this process's threads: the rate per CPU-second is what a
  shared machine cannot distort)."""
  from midpg_jax.stepping import prefetch
  if not output_path.endswith(OUTPUT_FORMATS):
    raise DataError(f'--output {output_path!r}: the name must end with one of {OUTPUT_FORMATS}')
  if not os.path.isfile(input_path):
    raise DataError(f'--input {input_path!r} is not a file')
  id_columns = list(id_columns)
  start, cpu_start = time.perf_counter(), time.process_time()
  writer, rows, complete = _Writer(output_path), 0, False
  try:
    for encoded, ids, _ in prefetch(_chunks(run, input_path, id_columns, chunk_bytes, progress,
                                            delimiter), 2):
      probs = run.predict_columns(encoded, batch_size)
      n = len(probs)
      out = dict(ids) if id_columns else {'row': pa.array(np.arange(rows, rows + n))}
      out['probability'] = pa.array(probs)
      writer.write(pa.table(out))
      rows += n
    if rows == 0:
      raise DataError(f'{input_path}: no data rows')
    complete = True
  finally:
    writer.close(complete)
  return {'rows': rows, 'seconds': time.perf_counter() - start,
          'cpu_seconds': time.process_time() - cpu_start}


def default_compile_cache() -> str:
  """~/.cache/midpg-jax/xla (under $XDG_CACHE_HOME when set)."""
  return os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
                      'midpg-jax', 'xla')


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog='midpg-predict', description='Scores raw rows with a trained '
                              'run (see midpg_jax/predict.py).')
  p.add_argument('--workdir', required=True, help='the training run')
  p.add_argument('--input', required=True, help='CSV (or .csv.gz) with the source columns')
  p.add_argument('--output', required=True, help='.csv or .parquet')
  p.add_argument('--id_columns', default='', help='comma-separated input columns to copy to the '
                 'output (default: a row index)')
  p.add_argument('--checkpoint', choices=('best', 'latest'), default='best')
  p.add_argument('--prepared_dir', default=None, help='the prepared dataset whose Encoder is '
                 'applied (default: found from the run config)')
  p.add_argument('--delimiter', default=',')
  p.add_argument('--chunk_bytes', type=int, default=1 << 24, help='CSV bytes per chunk')
  p.add_argument('--batch_size', type=int, default=DEFAULT_BATCH_SIZE, help='rows per model '
                 'call (the scores agree with eval.py\'s to float32 rounding at any size)')
  p.add_argument('--no_progress', action='store_true')
  p.add_argument('--compile_cache', default=default_compile_cache(), help='folder of XLA\'s '
                 'persistent compilation cache, so a run\'s predict function compiles once, not on '
                 'every call of this command (\'\' = off; JAX_COMPILATION_CACHE_DIR, when set, '
                 'wins)')
  args = p.parse_args(argv)
  import jax
  from midpg_jax import api
  from midpg_jax.errors import USER_ERRORS
  if args.compile_cache and not jax.config.jax_compilation_cache_dir:
    # Measured on 1M rows: the compile is ~4 of the ~17 CPU-s; a cache hit costs ~0.5.
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(args.compile_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  try:
    run = api.load_run(args.workdir, args.checkpoint, args.prepared_dir)
    ids = [c.strip() for c in args.id_columns.split(',') if c.strip()]
    result = predict_file(run, args.input, args.output, id_columns=ids,
                          chunk_bytes=args.chunk_bytes, progress=not args.no_progress,
                          delimiter=args.delimiter, batch_size=args.batch_size)
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')
  rows, seconds, cpu = result['rows'], result['seconds'], result['cpu_seconds']
  print(f'{rows:,} rows scored in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s; '
        f'{cpu:.1f} CPU-s, {rows / max(cpu, 1e-9):,.0f} rows per CPU-s) -> {args.output}')


if __name__ == '__main__':
  main()

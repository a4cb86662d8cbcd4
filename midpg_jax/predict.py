"""Scoring raw rows with a trained run, streaming: CSV in, CSV or Parquet out (`predict_file`).

  midpg-predict --workdir runs/aliccp --input new_rows.csv --output scores.parquet \
      [--id_columns user_id,item_id] [--checkpoint best]        (midpg_jax/commands/predict.py)

The input has the source files' columns and value forms (extra columns such as labels are
ignored); each chunk of rows is read and checked (a bad value is an error naming the file, line and
column, as in preparation), encoded with the Encoder that preparation fitted, scored by the run's
best checkpoint and appended to the output, which gets the `--id_columns` (copied as they are) and
`probability`; without id columns, `row` (0-based index of the data row in the input) instead.
Memory stays bounded by a few chunks (`--chunk_bytes` of CSV each), whatever the input's size.
Reading and encoding (pyarrow and numpy, in a thread), the model (XLA, dispatched asynchronously)
and writing work on three chunks at once; each model call takes one scenario's rows
(`GroupedScorer`). The output is written to `<output>.tmp` and renamed when complete: an error, a
full disk (one line, `StorageError`) or an interruption leaves no output and an earlier output of
the same name as it was. An output that would replace the input is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from midpg_jax import files
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
  """Appends tables to `<path>.tmp`, a CSV or Parquet file (chosen by the extension), renamed to
  `path` by `finish`."""

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

  def finish(self) -> None:
    writer, self._writer = self._writer, None
    writer.close()  # flushes: may still fail (a full disk)
    os.replace(self.tmp, self.path)

  def discard(self) -> None:
    """Removes the partial output. Called while an error propagates: what the writer raises on
    closing (mostly that error again) must not replace it."""
    try:
      if self._writer is not None:
        self._writer.close()
    except Exception:  # noqa: BLE001 (see above)
      pass
    finally:
      self._writer = None
      if os.path.exists(self.tmp):
        os.remove(self.tmp)


def _same_file(a: str, b: str) -> bool:
  return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


# Rows per model call. Measured (model only, rows per CPU-second, 2 shared cores) on the default
# MI-DPG: each scenario's rows in plain matmuls ('one_scenario') 128-142k at 4096 rows, the
# 'tiled' path of mixed rows 86-93k.
DEFAULT_BATCH_SIZE = 4096


class GroupedScorer:
  """Scores encoded chunks with each model call on rows of one scenario.

  A model with per-scenario weights (`scenario_matmul`) then runs the internal 'one_scenario'
  path: per layer one plain matmul with that scenario's weight, where the mixed-scenario 'tiled'
  path pads every scenario to whole tiles and gathers a weight per tile (measured: ~1.5x the
  rows per CPU-second for the default MI-DPG). The same parameters and the same function of
  each row, so the scores agree with eval.py's to float32 rounding. A model without per-scenario
  weights is called on the grouped rows as it is.

  `dispatch` only enqueues the calls (JAX dispatches asynchronously), `collect` waits for them,
  so the caller can write the previous chunk while XLA computes this one.
  """

  def __init__(self, run, batch_size: int):
    import jax
    from midpg_jax.models.scenario_ops import ONE_SCENARIO
    from midpg_jax.train_state import make_predict_step
    model = run.model
    if 'scenario_matmul' in {f.name for f in dataclasses.fields(model)}:
      model = model.clone(scenario_matmul=ONE_SCENARIO)
    self._predict = jax.jit(make_predict_step(model))
    self._state = run.state
    self._num_scenarios = run.spec.num_scenarios
    # A scenario's last rows of a chunk go in calls of a quarter batch (a second compiled shape),
    # so padding stays under a quarter batch per scenario and chunk.
    self.batch_size, self._tail = batch_size, max(1, batch_size // 4)

  def _calls(self, scenario: np.ndarray) -> list[np.ndarray]:
    """Row indices (into the chunk) of each model call: one scenario's rows, in input order,
    padded with the call's last row (same scenario) to batch_size or to the quarter batch."""
    order = np.argsort(scenario, kind='stable')
    bounds = np.searchsorted(scenario[order], np.arange(self._num_scenarios + 1))
    calls = []
    for s in range(self._num_scenarios):
      rows = order[bounds[s]:bounds[s + 1]]
      full = len(rows) - len(rows) % self.batch_size
      calls += [rows[i:i + self.batch_size] for i in range(0, full, self.batch_size)]
      calls += [np.pad(part, (0, self._tail - len(part)), mode='edge')
                for part in (rows[i:i + self._tail] for i in range(full, len(rows), self._tail))]
    return calls

  def dispatch(self, columns) -> tuple[list, list[np.ndarray], int]:
    """Enqueues the model calls of one chunk of encoded columns; returns what `collect` needs."""
    scenario = np.asarray(columns['scenario'])
    calls = self._calls(scenario)
    from midpg_jax.data.pipeline import take_rows
    from midpg_jax.train_state import model_inputs
    inputs = model_inputs(columns)
    return [self._predict(self._state, take_rows(inputs, rows)) for rows in calls], calls, len(
        scenario)

  @staticmethod
  def collect(pending) -> np.ndarray:
    """Probabilities (N,) float32 of a dispatched chunk, in its row order (blocks until done)."""
    outputs, calls, n = pending
    probs = np.empty(n, np.float32)
    for out, rows in zip(outputs, calls):
      probs[rows] = np.asarray(out)  # a padding row repeats its call's last row: same score
    return probs


def predict_file(run, input_path: str, output_path: str, *, id_columns=(),
                 chunk_bytes: int = 1 << 24, progress: bool = True, delimiter: str = ',',
                 batch_size: int = DEFAULT_BATCH_SIZE) -> dict:
  """Scores every row of `input_path` into `output_path`; returns {'rows', 'seconds',
  'cpu_seconds'} (CPU time of all this process's threads: the rate per CPU-second is what a
  shared machine cannot distort).

  Three stages overlap: a thread reads, checks and encodes chunk k + 2 (pyarrow and numpy, two
  chunks ahead at most), XLA computes chunk k + 1 (dispatched asynchronously), and this thread
  writes chunk k. Memory: five chunks at most (two queued, one being read, one in the model, one
  being written).
  """
  from midpg_jax.stepping import prefetch
  if not output_path.endswith(OUTPUT_FORMATS):
    raise DataError(f'--output {output_path!r}: the name must end with one of {OUTPUT_FORMATS}')
  if not os.path.isfile(input_path):
    raise DataError(f'--input {input_path!r} is not a file')
  if _same_file(input_path, output_path) or _same_file(input_path, output_path + '.tmp'):
    raise DataError(f'--output {output_path!r} would replace the input file {input_path!r}: '
                    'choose another output name')
  id_columns = list(id_columns)
  start, cpu_start = time.perf_counter(), time.process_time()
  scorer = GroupedScorer(run, batch_size)
  writer, rows = _Writer(output_path), 0

  def write(pending, ids, first_row) -> int:
    probs = scorer.collect(pending)
    out = dict(ids) if id_columns else {
        'row': pa.array(np.arange(first_row, first_row + len(probs)))}
    out['probability'] = pa.array(probs)
    writer.write(pa.table(out))
    return len(probs)

  kept = (f'{output_path} is unchanged' if os.path.exists(output_path) else
          f'no {output_path} written')
  with files.storage_errors(f'writing {output_path}', kept=kept):
    try:
      previous, dispatched = None, 0  # (dispatched chunk, its id columns, its first row)
      chunks = prefetch(_chunks(run, input_path, id_columns, chunk_bytes, progress, delimiter), 2)
      with contextlib.closing(chunks):  # on an error too: its thread is joined before we go on
        for encoded, ids, _ in chunks:
          current = (scorer.dispatch(encoded), ids, dispatched)
          dispatched += len(encoded['scenario'])
          if previous is not None:  # written while XLA computes `current`
            rows += write(*previous)
          previous = current
      if previous is not None:
        rows += write(*previous)
      if rows == 0:
        raise DataError(f'{input_path}: no data rows')
      writer.finish()
    except BaseException:
      writer.discard()
      raise
  return {'rows': rows, 'seconds': time.perf_counter() - start,
          'cpu_seconds': time.process_time() - cpu_start}

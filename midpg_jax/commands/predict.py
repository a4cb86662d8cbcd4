"""Scores raw rows with a trained run, streaming: CSV in, CSV or Parquet out.

  midpg-predict --workdir runs/aliccp --input new_rows.csv --output scores.parquet \
      [--id_columns user_id,item_id] [--checkpoint best]

What it writes and how it goes fast: midpg_jax/predict.py (`predict_file`) and docs/serving.md.
"""

import os

from absl import flags, logging

from midpg_jax import cli, xla_defaults
from midpg_jax.predict import DEFAULT_BATCH_SIZE


def default_compile_cache() -> str:
  """~/.cache/midpg-jax/xla (under $XDG_CACHE_HOME when set)."""
  return os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
                      'midpg-jax', 'xla')


flags.DEFINE_string('workdir', None, 'The training run.', required=True)
flags.DEFINE_string('input', None, 'CSV (or .csv.gz) with the source columns.', required=True)
flags.DEFINE_string('output', None, '.csv or .parquet', required=True)
flags.DEFINE_list('id_columns', [], 'Input columns to copy to the output (default: a row index).')
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to restore.')
flags.DEFINE_string('prepared_dir', None, 'The prepared dataset whose Encoder is applied '
                    '(default: found from the run config).')
flags.DEFINE_string('delimiter', ',', 'The input\'s field delimiter.')
flags.DEFINE_integer('chunk_bytes', 1 << 24, 'CSV bytes per chunk.')
flags.DEFINE_integer('batch_size', DEFAULT_BATCH_SIZE, 'Rows per model call (the scores agree '
                     'with eval.py\'s to float32 rounding at any size).')
flags.DEFINE_bool('progress', True, 'Show a progress bar.')
flags.DEFINE_string('compile_cache', default_compile_cache(), 'Folder of XLA\'s persistent '
                    'compilation cache, so a run\'s predict function compiles once, not on every '
                    'call of this command (\'\' = off; JAX_COMPILATION_CACHE_DIR, when set, wins).')
flags.DEFINE_string('xla_flags', '', 'More XLA flags for this process, added to XLA_FLAGS unless '
                    'it sets them already (the package\'s defaults: midpg_jax/xla_defaults.py).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  xla_defaults.apply(FLAGS.xla_flags.split())  # JAX's backend starts in load_run, after this
  import jax
  from midpg_jax import api, predict
  if FLAGS.compile_cache and not jax.config.jax_compilation_cache_dir:
    # Measured on 1M rows: the compile is ~4 of the ~17 CPU-s; a cache hit costs ~0.5.
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(FLAGS.compile_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  run = api.load_run(FLAGS.workdir, FLAGS.checkpoint, FLAGS.prepared_dir)
  result = predict.predict_file(run, FLAGS.input, FLAGS.output, id_columns=FLAGS.id_columns,
                                chunk_bytes=FLAGS.chunk_bytes, progress=FLAGS.progress,
                                delimiter=FLAGS.delimiter, batch_size=FLAGS.batch_size)
  rows, seconds, cpu = result['rows'], result['seconds'], result['cpu_seconds']
  print(f'{rows:,} rows scored in {seconds:.1f}s ({rows / max(seconds, 1e-9):,.0f} rows/s; '
        f'{cpu:.1f} CPU-s, {rows / max(cpu, 1e-9):,.0f} rows per CPU-s) -> {FLAGS.output}')


def run() -> None:
  """The console entry point (`midpg-predict`)."""
  cli.run(main)


if __name__ == '__main__':
  run()

"""Prepares a real dataset once from the files you downloaded, and prints what it holds.

  midpg-prepare --config configs/iaac.py --config.data.manual_dir=<folder>

Writes the columnar dataset that training memory-maps into config.data.prepared_dir (default
data_cache/<name>); a dataset prepared there before with the same data config from the same
source files (path, size, modification time) is reused, not rebuilt; changed sources are prepared
again, with a line saying why (--config.data.rebuild=True prepares again anyway and replaces it
once complete). Training
prepares on first use too; this command just does it ahead and shows the result.

--tfds_data_dir=<folder> also builds the dataset's TFDS builder (array_record files of the raw
rows, see midpg_jax/data/tfds_builders.py) there. --instructions prints where to download the
files and exits.
"""

import time

from absl import app, flags, logging

from midpg_jax import cli
from midpg_jax.data import load_dataset, prepare

cli.define_config_flag('Config file of the dataset, e.g. configs/iaac.py.', default=None)
flags.DEFINE_string('tfds_data_dir', '', 'If set, also build the TFDS dataset (array_record) '
                    'into this folder.')
flags.DEFINE_bool('instructions', False, 'Print the manual download instructions and exit.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  data = cli.config_from_flags().data
  if data.name == 'synthetic':
    raise app.UsageError('the synthetic dataset is generated in memory; nothing to prepare')
  if FLAGS.instructions or FLAGS.tfds_data_dir:
    from midpg_jax.data import tfds_builders  # imports tensorflow_datasets
    if FLAGS.instructions:
      print(tfds_builders.BUILDERS[data.name].MANUAL_DOWNLOAD_INSTRUCTIONS)
      return
  start = time.perf_counter()
  dataset = load_dataset(data)
  directory = prepare.prepared_path(data)
  meta = prepare.read_meta(directory)
  print(f'{data.name}: ready in {directory} ({time.perf_counter() - start:.1f}s here; prepared '
        f'{meta["prepared_at"]} in {meta["seconds"]}s)')
  spec = dataset.spec
  print(f'  {len(spec.cat_names)} categorical fields (vocabulary sizes '
        f'{dict(zip(spec.cat_names, spec.cat_vocab_sizes))})')
  if spec.multi_names:
    sizes = dict(zip(spec.multi_names, zip(spec.multi_vocab_sizes, spec.multi_max_lens)))
    print(f'  multi-valued fields (vocabulary size, max length): {sizes}')
  print(f'  {spec.num_dense} dense features; scenarios {spec.scenario_names}')
  for split, summary in meta['splits'].items():
    per = ', '.join(f'{k} {v["rows"]:,}/{v["positives"]:,}'
                    for k, v in summary['per_scenario'].items())
    print(f'  {split:>10}: {summary["rows"]:,} rows, {summary["positives"]:,} positives  '
          f'(rows/positives per scenario: {per})')
  if FLAGS.tfds_data_dir:
    start = time.perf_counter()
    builder = tfds_builders.build(data, FLAGS.tfds_data_dir)
    print(f'TFDS dataset {builder.name}/{builder.builder_config.name} in {builder.data_dir} '
          f'({time.perf_counter() - start:.1f}s)')


def run() -> None:
  """The console entry point (`midpg-prepare`); a UserError is one line."""
  cli.run(main)

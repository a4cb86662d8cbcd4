"""Writes the serving folder of a trained run (midpg_jax/export.py; docs/serving.md).

  midpg-export --workdir runs/aliccp --out export/aliccp [--platforms cpu,cuda]
"""

from absl import flags, logging

from midpg_jax import cli

flags.DEFINE_string('workdir', None, 'The training run.', required=True)
flags.DEFINE_string('out', None, 'The folder to write: an existing export there is replaced, a run '
                    'or any other folder is refused.', required=True)
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to export.')
flags.DEFINE_string('prepared_dir', None, 'The prepared dataset (default: found from the run '
                    'config).')
flags.DEFINE_list('platforms', ['cpu'], 'Lowerings to store: cpu, cuda, rocm, tpu.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from midpg_jax import api, export
  run = api.load_run(FLAGS.workdir, FLAGS.checkpoint, FLAGS.prepared_dir)
  out = export.export_run(run, FLAGS.out, tuple(FLAGS.platforms))
  print(f'exported {run.config.model.name} ({FLAGS.checkpoint} checkpoint) to {out}')


def run() -> None:
  """The console entry point (`midpg-export`)."""
  cli.run(main)


if __name__ == '__main__':
  run()

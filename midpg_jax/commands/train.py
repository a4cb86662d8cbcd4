"""Trains a model: python train.py --config configs/default.py --workdir runs/default

The program of `python train.py` and of the `midpg-train` console command (the same flags, from any
folder); the usage is in train.py's docstring and docs/training.md.
"""

import os

from absl import flags, logging

from midpg_jax import cli, metrics, partitioning, trainer

cli.define_config_flag('Training config file.')
flags.DEFINE_string('workdir', 'runs/default', 'Where checkpoints and metrics are written; an '
                    'existing run there is resumed. With several hosts: a folder all of them '
                    'share.')
partitioning.define_flags()


def main(argv):
  del argv
  # Orbax logs every save at INFO through absl; users want the progress bar and the table.
  logging.set_verbosity(logging.WARNING)
  workdir = flags.FLAGS.workdir
  partitioning.initialize_from_flags()  # before anything touches a device
  if not partitioning.is_main_process():
    logging.set_verbosity(logging.ERROR)
  config = cli.config_from_flags(workdir)
  summary = trainer.train_and_evaluate(config, workdir)
  if not partitioning.is_main_process():
    return
  for split in ('validation', 'test'):
    print()
    print(metrics.format_table(summary[split], f'{summary["model"]} - best checkpoint (step '
                                               f'{summary["best_step"]}) on {split}'))
  print(f'\nmetrics: {os.path.join(workdir, "final_metrics.json")}')


def run() -> None:
  """The console entry point (`midpg-train`)."""
  cli.run(main)

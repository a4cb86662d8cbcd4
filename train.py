"""Trains a model: python train.py --config configs/default.py --workdir runs/default

Config values are overridden with --config.<path>=<value>, e.g. --config.model.midpg.rank=8. An
existing run in --workdir is resumed with its own config (<workdir>/config.json); an override that
would change what it computes is refused (see midpg_jax/run_config.py).
Several devices are used through the mesh of --config.mesh.shape (default: all of them, data
parallel); several hosts: one process per host with --coordinator_address, --num_processes and
--process_id (or automatically under SLURM / Open MPI; --distributed=on on a TPU pod slice). See
README "Running on several GPUs, a TPU pod slice and several hosts".
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


if __name__ == '__main__':
  cli.run(main)

"""Trains a model: python train.py --config configs/default.py --workdir runs/default

Config values are overridden with --config.<path>=<value>, e.g. --config.model.rank=8.
Several devices are used through the mesh of --config.mesh.shape (default: all of them, data
parallel); several hosts: one process per host with --coordinator_address, --num_processes and
--process_id (or automatically under SLURM / Open MPI; --distributed=on on a TPU pod slice). See
README "Running on several GPUs, a TPU pod slice and several hosts".
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from midpg_jax import metrics, partitioning, trainer  # noqa: E402
from midpg_jax.errors import USER_ERRORS  # noqa: E402

config_flags.DEFINE_config_file('config', 'configs/default.py', 'Training config file.',
                                lock_config=True)
flags.DEFINE_string('workdir', 'runs/default', 'Where checkpoints and metrics are written; an '
                    'existing run there is resumed. With several hosts: a folder all of them '
                    'share.')
partitioning.define_flags()


def main(argv):
  del argv
  # Orbax logs every save at INFO through absl; users want the progress bar and the table.
  logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  try:
    partitioning.initialize_from_flags()  # before anything touches a device
    if not partitioning.is_main_process():
      logging.set_verbosity(logging.ERROR)
    summary = trainer.train_and_evaluate(config, flags.FLAGS.workdir)
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')
  if not partitioning.is_main_process():
    return
  for split in ('validation', 'test'):
    print()
    print(metrics.format_table(summary[split], f'{summary["model"]} - best checkpoint (step '
                                               f'{summary["best_step"]}) on {split}'))
  print(f'\nmetrics: {os.path.join(flags.FLAGS.workdir, "final_metrics.json")}')


if __name__ == '__main__':
  app.run(main)

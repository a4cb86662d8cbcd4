"""Evaluates the best checkpoint of a run on one split.

The program of `python eval.py` and of the `midpg-eval` console command (the same flags, from any
folder); the usage is in eval.py's docstring and docs/training.md.
"""

import json
import os

from absl import flags, logging
import numpy as np

from midpg_jax import cli, evaluation, files, metrics, partitioning

cli.define_config_flag('The config file the run was trained with (default: the run\'s own, '
                       '<workdir>/config.json, which wins where they differ).')
flags.DEFINE_string('workdir', 'runs/default', 'The training run to evaluate.')
flags.DEFINE_string('split', 'test', 'Which split to score: train, validation or test.')
flags.DEFINE_string('predictions', None, 'Optional CSV path for per-example predictions.')
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to restore.')
partitioning.define_flags()


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  partitioning.initialize_from_flags()  # before anything touches a device
  if not partitioning.is_main_process():
    logging.set_verbosity(logging.ERROR)
  config = cli.config_from_flags(f.workdir)
  out = os.path.join(f.workdir, f'eval_{f.split}.json')
  if partitioning.is_main_process() and os.path.isdir(f.workdir):
    # Before the evaluation, not after it: a read-only workdir is one line at once.
    with files.storage_errors(f'writing {out}'):
      files.check_writable(f.workdir)
  result, probs, dataset, meta = evaluation.evaluate_checkpoint(config, f.workdir, f.split,
                                                                f.checkpoint)
  if not partitioning.is_main_process():
    return
  print(metrics.format_table(result, f'{config.model.name} - {f.checkpoint} checkpoint (step '
                                     f'{meta["checkpoint_step"]}) on {f.split}'))
  with files.storage_errors(f'writing {out}', kept='an earlier one is unchanged'):
    files.write_text(out, json.dumps({'split': f.split, 'checkpoint': f.checkpoint, 'meta': meta,
                                      'metrics': result}, indent=1, default=float))
  print(f'\nmetrics: {out}')
  if f.predictions:
    cols = dataset.splits[f.split]
    table = [np.arange(len(probs)), cols['scenario'], cols['label'], probs]
    header = 'row,scenario,label,prediction'
    if 'prob' in cols:
      table.append(cols['prob'])
      header += ',true_prob'
    with files.storage_errors(f'writing {f.predictions}', kept='an earlier one is unchanged'):
      os.makedirs(os.path.dirname(os.path.abspath(f.predictions)), exist_ok=True)
      with files.replacing(f.predictions) as tmp:
        np.savetxt(tmp, np.stack(table, axis=1), delimiter=',', header=header, comments='',
                   fmt=['%d', '%d', '%d', '%.9g'] + (['%.9g'] if 'prob' in cols else []))
    print(f'predictions: {f.predictions}')


def run() -> None:
  """The console entry point (`midpg-eval`)."""
  cli.run(main)

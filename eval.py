"""Evaluates the best checkpoint of a run on one split.

  python eval.py --config configs/default.py --workdir runs/default --split test \
      [--predictions runs/default/test_predictions.csv]

Writes <workdir>/eval_<split>.json and, if asked, one CSV row per example
(row, scenario, label, prediction[, true_prob]).

The checkpoint is restored onto the mesh of --config.mesh.shape, whatever mesh trained it; the
multi-process flags are train.py's (each process scores its share; process 0 writes).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402

from midpg_jax import evaluation, metrics, partitioning  # noqa: E402
from midpg_jax.errors import USER_ERRORS  # noqa: E402

config_flags.DEFINE_config_file('config', 'configs/default.py', 'The config the run was trained '
                                'with.', lock_config=True)
flags.DEFINE_string('workdir', 'runs/default', 'The training run to evaluate.')
flags.DEFINE_string('split', 'test', 'Which split to score: train, validation or test.')
flags.DEFINE_string('predictions', None, 'Optional CSV path for per-example predictions.')
flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint to restore.')
partitioning.define_flags()


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  try:
    partitioning.initialize_from_flags()  # before anything touches a device
    if not partitioning.is_main_process():
      logging.set_verbosity(logging.ERROR)
    result, probs, dataset, meta = evaluation.evaluate_checkpoint(f.config, f.workdir, f.split,
                                                                  f.checkpoint)
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')
  if not partitioning.is_main_process():
    return
  print(metrics.format_table(result, f'{f.config.model.name} - {f.checkpoint} checkpoint (step '
                                     f'{meta.get("best_step")}) on {f.split}'))
  out = os.path.join(f.workdir, f'eval_{f.split}.json')
  with open(out, 'w') as fh:
    json.dump({'split': f.split, 'checkpoint': f.checkpoint, 'meta': meta, 'metrics': result},
              fh, indent=1, default=float)
  print(f'\nmetrics: {out}')
  if f.predictions:
    cols = dataset.splits[f.split]
    table = [np.arange(len(probs)), cols['scenario'], cols['label'], probs]
    header = 'row,scenario,label,prediction'
    if 'prob' in cols:
      table.append(cols['prob'])
      header += ',true_prob'
    os.makedirs(os.path.dirname(os.path.abspath(f.predictions)), exist_ok=True)
    np.savetxt(f.predictions, np.stack(table, axis=1), delimiter=',', header=header,
               comments='', fmt=['%d', '%d', '%d', '%.6f'] + (['%.6f'] if 'prob' in cols else []))
    print(f'predictions: {f.predictions}')


if __name__ == '__main__':
  app.run(main)

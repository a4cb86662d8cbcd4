"""Evaluates the best checkpoint of a run on one split.

  python eval.py --workdir runs/default --split test \
      [--predictions runs/default/test_predictions.csv]

Uses the run's own config (<workdir>/config.json); --config.<key>=<value> may change only what
does not change the model or the data (e.g. --config.train.eval_batch_size, --config.mesh.shape).
Writes <workdir>/eval_<split>.json and, if asked, one CSV row per example
(row, scenario, label, prediction[, true_prob]).

The checkpoint is restored onto the mesh of --config.mesh.shape, whatever mesh trained it; the
multi-process flags are train.py's (each process scores its share; process 0 writes).
"""

from midpg_jax.commands import evaluate

if __name__ == '__main__':
  evaluate.run()

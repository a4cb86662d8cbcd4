"""The command-line programs, as modules of the package so that `pip install` can give them
console entry points (pyproject.toml [project.scripts]):

  midpg-train    = python train.py      (train.py)
  midpg-eval     = python eval.py       (evaluate.py)
  midpg-prepare  prepares a real dataset ahead of training (prepare.py)
  midpg-predict  scores raw rows with a trained run, streaming (predict.py)
  midpg-export   writes a run's serving folder (export.py)
  midpg-compare  = python -m midpg_jax.compare (compare.py)

Each defines absl flags (--config through midpg_jax/cli.py) and runs through `cli.run`, which sets
the package's XLA flags first. A config file named by --config is loaded by its path from any
folder; what it imports (`from midpg_jax import config`) is the installed package.
"""

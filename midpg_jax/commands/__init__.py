"""The command-line programs, as modules of the package so that `pip install` can give them
console entry points (pyproject.toml [project.scripts]):

  midpg-train    = python train.py      (commands/train.py)
  midpg-eval     = python eval.py       (commands/evaluate.py)
  midpg-prepare  prepares a real dataset ahead of training (commands/prepare.py)
  midpg-predict, midpg-export           (midpg_jax/predict.py, midpg_jax/export.py)

train.py and eval.py at the top of the checkout stay the main entries; they only call these.
A config file named by --config is loaded by its path from any folder; what it imports
(`from configs import default`) is the `configs` package installed beside `midpg_jax`.
"""

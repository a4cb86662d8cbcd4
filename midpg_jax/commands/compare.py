"""A tuned comparison of models in one command (midpg_jax/compare/; docs/compare.md).

  midpg-compare                                    # = python -m midpg_jax.compare: the zoo
  midpg-compare --config configs/bench/ablation.py --config.seeds="(0,)"
"""

import os

from absl import logging

from midpg_jax import cli

cli.define_config_flag('Comparison config (default: the zoo on the built-in data, '
                       'midpg_jax/compare/config.py; `<that file>:<name>` picks another).',
                       default=os.path.join(os.path.dirname(cli.DEFAULT_CONFIG), 'compare',
                                            'config.py'),
                       lock_config=False)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from midpg_jax import compare
  config = cli.config_from_flags()
  result = compare.run(config)
  print()
  print(result['markdown'])
  print(f'written to {config.output_dir}')


def run() -> None:
  """The console entry point (`midpg-compare`)."""
  cli.run(main)

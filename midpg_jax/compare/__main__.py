"""python -m midpg_jax.compare --config configs/bench/synthetic.py [--config.seeds="(0,)"]

The config files import `configs.bench...`: the `configs` package installed beside midpg_jax (or,
from the checkout's root, the checkout's own: `python -m` puts the working directory first).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from midpg_jax import compare
from midpg_jax.errors import USER_ERRORS

config_flags.DEFINE_config_file('config', 'configs/bench/synthetic.py', 'Comparison config.',
                                lock_config=False)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    result = compare.run(flags.FLAGS.config)
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')
  print()
  print(result['markdown'])
  print(f'written to {flags.FLAGS.config.output_dir}')


if __name__ == '__main__':
  app.run(main)

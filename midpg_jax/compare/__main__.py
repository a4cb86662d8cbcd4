"""python -m midpg_jax.compare --config configs/bench/synthetic.py [--config.seeds="(0,)"]"""

import os
import sys

sys.path.insert(0, os.getcwd())  # configs/ of the working directory

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from midpg_jax import compare  # noqa: E402
from midpg_jax.errors import USER_ERRORS  # noqa: E402

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

"""midpg-compile: compiles a config's train and predict steps for hardware that need not be here,
and prints what XLA says of each per device.

  midpg-compile --topology v5e:4x4 [--config configs/default.py] [--batch_size 65536]
      [--config.mesh.shape='(-1,4)'] [--config.model.dtype=bfloat16] [--json out.json]

--topology: a TPU slice (v4, v5e, v5p, v6e; multi-host slices too) through compile-only libtpu
(`pip install "midpg-jax[tpu]"`), an NVIDIA target (h100:8, a100:8) through the JAX CUDA plugin's
deviceless compile (`pip install "midpg-jax[cuda]"`), or cpu:<N> host devices. Per step and device:
FLOPs and bytes accessed (XLA's cost analysis), argument / temp / output memory against the chip's
HBM, the collectives by kind with their bytes, and a roofline estimate of the step time and
examples/s/chip from the chip's published peaks (midpg_jax/aot/chips.py).
"""

from __future__ import annotations

import json
import os

from absl import flags, logging

from midpg_jax import cli
from midpg_jax.aot import targets
from midpg_jax.aot.report import format_report, report

cli.define_config_flag('Config whose steps are compiled.')
flags.DEFINE_string('topology', None, 'Target: e.g. v5e:4x4, v4:2x2x2, v5e:8x8, h100:8, cpu:8.')
flags.DEFINE_integer('batch_size', None, 'Global train batch (default: --per_chip_batch x chips, '
                     'else config.train.batch_size); must divide by the mesh data axis.')
flags.DEFINE_integer('per_chip_batch', None, 'Train rows per chip of the data axis (weak scaling).')
flags.DEFINE_integer('predict_batch_size', None, 'Global predict batch (default: the train one).')
flags.DEFINE_list('steps', ['train', 'predict'], 'Which steps to compile.')
flags.DEFINE_string('json', None, 'Also write the numbers to this JSON file.')
flags.mark_flag_as_required('topology')
FLAGS = flags.FLAGS


def _prepare_backend(target: targets.Target) -> None:
  """Before JAX's backend starts: host devices for cpu:<N>; otherwise JAX runs on the CPU here
  (the target's devices come from its compile-only topology, not from an attached backend)."""
  import jax
  if not os.environ.get('JAX_PLATFORMS'):  # read by jax on import: set its config instead
    jax.config.update('jax_platforms', 'cpu')
  if target.platform == 'cpu':
    from midpg_jax import xla_defaults
    os.environ['XLA_FLAGS'] = xla_defaults.with_xla_flags(
        f'--xla_force_host_platform_device_count={target.count}')


def main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # JAX logs each backend it does not find at INFO
  target = targets.parse(FLAGS.topology)
  _prepare_backend(target)
  config = cli.config_from_flags()
  r = report(target, config, FLAGS.batch_size, FLAGS.per_chip_batch, FLAGS.predict_batch_size,
             FLAGS.steps)
  print(format_report(r, target.chip))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(r, f, indent=1)
    print(f'\nnumbers: {FLAGS.json}')


def run() -> None:
  """The console entry point (`midpg-compile`)."""
  cli.run(main)

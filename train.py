"""Trains a model: python train.py --config configs/default.py --workdir runs/default

Config values are overridden with --config.<path>=<value>, e.g. --config.model.midpg.rank=8. An
existing run in --workdir is resumed with its own config (<workdir>/config.json); an override that
would change what it computes is refused (see midpg_jax/run_config.py).
Several devices are used through the mesh of --config.mesh.shape (default: all of them, data
parallel); several hosts: one process per host with --coordinator_address, --num_processes and
--process_id (or found by JAX under SLURM, Open MPI, a TPU pod slice or a Kubernetes job). See
docs/distributed.md.
"""

from midpg_jax.commands import train

if __name__ == '__main__':
  train.run()

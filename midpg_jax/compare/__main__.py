"""python -m midpg_jax.compare: the `midpg-compare` command (midpg_jax/commands/compare.py)."""

from midpg_jax.commands import compare

if __name__ == '__main__':
  compare.run()

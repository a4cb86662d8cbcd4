"""python -m midpg_jax.speed ...: see midpg_jax/speed/__init__.py and --help."""

from midpg_jax.speed.cli import main

if __name__ == '__main__':
  main()

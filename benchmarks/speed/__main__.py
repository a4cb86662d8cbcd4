"""python -m benchmarks.speed ...: see benchmarks/speed/__init__.py and --help."""

from benchmarks.speed.cli import run

if __name__ == '__main__':
  run()

"""MI-DPG on the built-in synthetic dataset (the same as configs/default.py)."""

from configs import default


def get_config():
  return default.get_config()

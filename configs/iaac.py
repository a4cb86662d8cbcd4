"""A model on IAAC (IJCAI-18 Alimama ad conversion; scenario = user_gender_id).

  python train.py --config configs/iaac.py --config.data.manual_dir=<folder with
      round1_ijcai_18_train_20180301.txt> --workdir runs/iaac
Other scenario field: --config.data.scenario_field=context_page_id. Data keys and the file format:
midpg_jax/data/iaac.py (download instructions: iaac.INSTRUCTIONS).
"""

from midpg_jax import config


def get_config(mode: str | None = None):
  """mode: MI-DPG's generator input, 'scenario' (default) or 'instance'."""
  return config.get_config(mode, dataset='iaac')

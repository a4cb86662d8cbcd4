"""A learning curve on Ali-CCP: MI-DPG and three baselines on 1M, 5M and 20M rows.

  python -m midpg_jax.compare --config configs/bench/aliccp_curve.py \
      --config.base.data.manual_dir=<folder with the ali_ccp_{train,val,test}*.csv files>

What it runs and why: midpg_jax/compare/config.py (aliccp_curve()).
"""

from midpg_jax.compare import config


def get_config():
  return config.aliccp_curve()

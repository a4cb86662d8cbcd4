"""IAAC: the IJCAI-18 Alimama ad conversion data (Taobao search ads), prepared from the user's file.

Raw file: `round1_ijcai_18_train_20180301.txt`, space-separated with a header line, one ad
impression per line (about 478k), columns

  instance_id item_id item_category_list item_property_list item_brand_id item_city_id
  item_price_level item_sales_level item_collected_level item_pv_level user_id user_gender_id
  user_age_level user_occupation_id user_star_level context_id context_timestamp context_page_id
  predict_category_property shop_id shop_review_num_level shop_review_positive_rate
  shop_star_level shop_score_service shop_score_delivery shop_score_description is_trade

* label `is_trade`; scenario `user_gender_id` (-1, 0, 1, 2) by default, `context_page_id` as the
  other choice (the scenario field is never also a feature);
* single-valued ids as categorical fields (-1 = "unknown" in the raw data is a value of its own);
  `hour` (of `context_timestamp`, Beijing time) is derived;
* `item_category_list`, `item_property_list` (';'-separated) and `predict_category_property`
  ('cat:prop,prop;cat:-1;...', tokenised to its predicted categories) are multi-valued fields,
  each keeping its first `max_len` tokens;
* the four `shop_*` rates/scores are dense (-1 = unknown stays a number; scaled on train);
* split by day of `context_timestamp` (UTC+8): the last day is test, the day before validation,
  the earlier days (2018-09-18 .. 09-22) train.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from midpg_jax.data import prepare, reader

NAME = 'iaac'
TRAIN_FILE = 'round1_ijcai_18_train_20180301.txt'
DERIVED = ('hour',)

INSTRUCTIONS = f"""\
IAAC (IJCAI-18 Alimama search-ad conversion prediction, round 1) cannot be downloaded automatically.
1. Sign in at https://tianchi.aliyun.com and open the competition "IJCAI-18 Alimama Sophisticated
   Search Advertising Conversion Prediction"
   (https://tianchi.aliyun.com/competition/entrance/231647), "Data" tab.
2. Download round1_ijcai_18_train_20180301.zip and unzip it.
3. Put {TRAIN_FILE} (space-separated text with a header line, about 478k rows, columns
   instance_id ... is_trade) into one folder and pass it as --config.data.manual_dir=<folder>
   (another file name: --config.data.train_file=<name>; a .gz-compressed copy also works).
"""


def data_config():
  multi = {'item_category_list': {'sep': ';', 'max_len': 3, 'part_sep': ''},
           'item_property_list': {'sep': ';', 'max_len': 16, 'part_sep': ''},
           'predict_category_property': {'sep': ';', 'max_len': 8, 'part_sep': ':'}}
  return prepare.base_config(
      NAME,
      train_file=TRAIN_FILE,
      scenario_field='user_gender_id',  # or 'context_page_id'
      label='is_trade',
      time_column='context_timestamp',
      utc_offset_hours=8,  # the timestamps are Beijing time: days start at 16:00 UTC
      validation_days=1,
      test_days=1,
      cat_columns=('item_id', 'item_brand_id', 'item_city_id', 'item_price_level',
                   'item_sales_level', 'item_collected_level', 'item_pv_level', 'user_id',
                   'user_gender_id', 'user_age_level', 'user_occupation_id', 'user_star_level',
                   'context_page_id', 'shop_id', 'shop_review_num_level', 'shop_star_level',
                   'hour'),
      multi_columns=multi,
      dense_columns=('shop_review_positive_rate', 'shop_score_service', 'shop_score_delivery',
                     'shop_score_description'))


def schema(cfg) -> prepare.Schema:
  return prepare.schema_from_config(cfg)


def source(cfg) -> prepare.Source:
  """Rows split by day: a first pass reads the time column for the last day."""
  directory = prepare.manual_dir(cfg, INSTRUCTIONS)
  paths = prepare.find_files(directory, str(cfg.train_file), 'IAAC', INSTRUCTIONS)
  when = str(cfg.time_column)
  kinds = schema(cfg).kinds(exclude=DERIVED)
  kinds[when] = 'int'
  offset = int(cfg.utc_offset_hours) * 3600
  last_day = []  # computed on first use

  def split(columns) -> np.ndarray:  # (n,) int8 index into SPLITS
    if not last_day:
      times, _ = prepare.column_of_files(
          paths, when, 'int', read=lambda p, k: reader.iter_csv(p, k, delimiter=' '))
      last_day.append(int((times.max() + offset) // 86400) if len(times) else 0)
    day = (columns[when].to_numpy() + offset) // 86400
    test = day > last_day[0] - int(cfg.test_days)
    validation = ~test & (day > last_day[0] - int(cfg.test_days) - int(cfg.validation_days))
    return np.where(test, 2, np.where(validation, 1, 0)).astype(np.int8)

  def chunks():
    for path in paths:
      for columns, first_line in reader.iter_csv(path, kinds, delimiter=' ',
                                                 progress=bool(cfg.progress)):
        if 'hour' in cfg.cat_columns:
          local = columns[when].to_numpy() + offset
          columns['hour'] = pa.array((local // 3600) % 24)
        yield prepare.chunk_of(columns, path, first_line, split(columns))

  return prepare.Source(files=paths, chunks=chunks)


def load(cfg):
  return prepare.load_or_prepare(cfg, lambda: source(cfg), schema(cfg))


__all__ = ['INSTRUCTIONS', 'data_config', 'load', 'source', 'schema']

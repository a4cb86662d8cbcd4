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

from midpg_jax.data import prepare

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


def read_splits(cfg) -> dict[str, prepare.RawTable]:
  directory = prepare.manual_dir(cfg, INSTRUCTIONS)
  paths = prepare.find_files(directory, str(cfg.train_file), 'IAAC', INSTRUCTIONS)
  kinds = schema(cfg).kinds(exclude=DERIVED)
  kinds[str(cfg.time_column)] = 'int'
  table = prepare.RawTable.concat([
      prepare.read_csv(p, kinds, delimiter=' ', progress=bool(cfg.progress)) for p in paths])
  local = table.columns[str(cfg.time_column)] + int(cfg.utc_offset_hours) * 3600
  if 'hour' in cfg.cat_columns:
    table = table.with_column('hour', (local // 3600) % 24)
  day = local // 86400
  last = day.max() if len(day) else 0
  test = day > last - int(cfg.test_days)
  validation = ~test & (day > last - int(cfg.test_days) - int(cfg.validation_days))
  train = ~test & ~validation
  return {'train': table.take(train), 'validation': table.take(validation),
          'test': table.take(test)}


def load(cfg):
  return prepare.load_or_prepare(cfg, lambda: read_splits(cfg), schema(cfg))


__all__ = ['INSTRUCTIONS', 'data_config', 'load', 'read_splits', 'schema']

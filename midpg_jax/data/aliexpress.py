"""AliExpress search logs (one file set per country, the country is the scenario).

Raw files, one folder per country (as in the public release, unzipped):
`AliExpress_NL/train.csv`, `AliExpress_NL/test.csv`, `AliExpress_ES/...`, comma-separated with a
header line. The expected column layout (config: `cat_columns`, `dense_columns`, `group_column`,
`click_column`, `label`):

  search_id                          the search session (int); groups rows for the validation split
  categorical_1 .. categorical_16    integer-encoded categorical features
  numerical_1 .. numerical_63        numerical features (already in [0, 1] in the release)
  click, conversion                  labels (0/1)

* label `conversion`; by default on clicked rows only (`click == 1`: the CVR task),
  `clicked_only=False` keeps every impression;
* scenario: the country of the folder (`countries`), mapped in sorted order unless
  `scenario_values` fixes the order;
* splits: each country's `test.csv` is test; its `train.csv` is split by search session: a
  deterministic `validation_fraction` of its `search_id`s (by `seed`) is validation, the rest
  train. The data has no time column.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from midpg_jax.data import prepare

NAME = 'aliexpress'

INSTRUCTIONS = """\
AliExpress must be downloaded by you from Tianchi (sign-in needed):
https://tianchi.aliyun.com/dataset/74690 ("AliExpress Dataset"), one zip per country
(AliExpress_NL.zip, AliExpress_ES.zip, AliExpress_FR.zip, AliExpress_US.zip, AliExpress_RU.zip).
Unzip each so that config.data.manual_dir holds AliExpress_<country>/train.csv and
AliExpress_<country>/test.csv, with the header
  search_id,categorical_1..categorical_16,numerical_1..numerical_63,click,conversion
and pass --config.data.manual_dir=<folder>. Choose countries with
--config.data.countries="('NL','ES','FR','US')"; other folder or file names with
--config.data.country_dir (a pattern with {country}), --config.data.train_file and
--config.data.test_file.
"""


def data_config():
  return prepare.base_config(
      NAME,
      countries=('NL', 'ES', 'FR', 'US'),
      country_dir='AliExpress_{country}',
      train_file='train.csv',
      test_file='test.csv',
      scenario_field='country',  # derived from the folder, not a column of the files
      label='conversion',
      click_column='click',
      clicked_only=True,
      group_column='search_id',
      validation_fraction=0.1,
      seed=0,
      cat_columns=tuple(f'categorical_{i}' for i in range(1, 17)),
      dense_columns=tuple(f'numerical_{i}' for i in range(1, 64)))


def schema(cfg) -> prepare.Schema:
  return prepare.schema_from_config(cfg)


def _validation_rows(groups: np.ndarray, fraction: float, seed: int, country: str) -> np.ndarray:
  """Rows whose group is among a deterministic `fraction` of the distinct groups."""
  uniq = np.unique(groups)
  rng = np.random.default_rng([int(seed), zlib.crc32(country.encode())])
  chosen = uniq[rng.random(len(uniq)) < fraction]
  return np.isin(groups, chosen)


def read_splits(cfg) -> dict[str, prepare.RawTable]:
  directory = prepare.manual_dir(cfg, INSTRUCTIONS)
  field, click, group = str(cfg.scenario_field), str(cfg.click_column), str(cfg.group_column)
  kinds = schema(cfg).kinds(exclude=(field,))
  kinds[group] = 'int'
  keep = None
  if cfg.clicked_only:
    kinds.setdefault(click, 'label')
    keep = lambda batch: batch.column(click).to_numpy() == 1  # noqa: E731
  parts = {'train': [], 'validation': [], 'test': []}
  if not cfg.countries:
    raise ValueError('config.data.countries is empty')
  for country in cfg.countries:
    folder = os.path.join(directory, str(cfg.country_dir).format(country=country))
    tables = {}
    for split, name in (('train', cfg.train_file), ('test', cfg.test_file)):
      paths = prepare.find_files(folder, str(name), f'AliExpress {country} {split}', INSTRUCTIONS)
      t = prepare.RawTable.concat([prepare.read_csv(p, kinds, keep=keep,
                                                    progress=bool(cfg.progress)) for p in paths])
      tables[split] = t.with_column(field, prepare.constant_column(str(country), len(t)))
    val = _validation_rows(tables['train'].columns[group], float(cfg.validation_fraction),
                           int(cfg.seed), str(country))
    parts['train'].append(tables['train'].take(~val))
    parts['validation'].append(tables['train'].take(val))
    parts['test'].append(tables['test'])
  return {s: prepare.RawTable.concat(p) for s, p in parts.items()}


def load(cfg):
  return prepare.load_or_prepare(cfg, lambda: read_splits(cfg), schema(cfg))


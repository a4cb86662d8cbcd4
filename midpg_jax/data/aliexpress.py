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

from midpg_jax.data import prepare, reader

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
  """Rows whose group is among a deterministic `fraction` of the groups: a hash of (seed, country,
  group) per row, so a chunk is split without seeing the others (splitmix64 finaliser)."""
  with np.errstate(over='ignore'):
    x = groups.astype(np.uint64) + np.uint64((int(seed) << 32) ^ zlib.crc32(country.encode()))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
  return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def source(cfg) -> prepare.Source:
  directory = prepare.manual_dir(cfg, INSTRUCTIONS)
  field, click, group = str(cfg.scenario_field), str(cfg.click_column), str(cfg.group_column)
  kinds = schema(cfg).kinds(exclude=(field,))
  kinds[group] = 'int'
  keep = None
  if cfg.clicked_only:
    kinds.setdefault(click, 'label')
    keep = lambda columns: columns[click].to_numpy() == 1  # noqa: E731
  if not cfg.countries:
    raise prepare.ConfigError('config.data.countries is empty')
  files = []  # (country, split of the file, path)
  for country in cfg.countries:
    folder = os.path.join(directory, str(cfg.country_dir).format(country=country))
    for split, name in (('train', cfg.train_file), ('test', cfg.test_file)):
      for p in prepare.find_files(folder, str(name), f'AliExpress {country} {split}',
                                  INSTRUCTIONS):
        files.append((str(country), split, p))

  def chunks():
    for country, split, path in files:
      for columns, first_line in reader.iter_csv(path, kinds, progress=bool(cfg.progress)):
        columns[field] = prepare.constant_column(country, len(columns[group]))
        rows = split
        if split == 'train':  # validation: a fraction of the search sessions
          rows = _validation_rows(columns[group].to_numpy(), float(cfg.validation_fraction),
                                  int(cfg.seed), country).astype(np.int8)
        yield prepare.chunk_of(columns, path, first_line, rows, keep)

  return prepare.Source(files=[p for _, _, p in files], chunks=chunks)


def load(cfg):
  return prepare.load_or_prepare(cfg, lambda: source(cfg), schema(cfg))

"""Amazon product reviews split by category (the category is the scenario).

Raw files, one per category: the 5-core review files, JSON lines (optionally .gz) with at least
`reviewerID`, `asin`, `overall` (the 1-5 star rating) and `unixReviewTime` (unix seconds), as in
`reviews_Beauty_5.json.gz` (2014 release) or `Beauty_5.json.gz` (2018 release; set
`file_pattern='{category}_5.json*'`). Ratings-only CSV files (`ratings_Beauty.csv`: user, item,
rating, timestamp, no header) also work: a file ending in .csv / .csv.gz is read as CSV with
`csv_column_names` as its header (() = the file has a header line).

* label: `overall >= positive_rating` (default 4) -> 1, else 0;
* features: `reviewerID` and `asin` as categorical string ids;
* split by time over all categories together: the earliest `split_fractions[0]` of the reviews
  train, the next validation, the latest test.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from midpg_jax.data import prepare, reader

NAME = 'amazon'

INSTRUCTIONS = """\
Amazon reviews must be downloaded by you: the "5-core" review files of the categories you want,
e.g. from https://jmcauley.ucsd.edu/data/amazon/ (2014: reviews_Beauty_5.json.gz,
reviews_Clothing_Shoes_and_Jewelry_5.json.gz, reviews_Health_and_Personal_Care_5.json.gz) or
https://nijianmo.github.io/amazon/ (2018: Beauty_5.json.gz, ...; then also pass
--config.data.file_pattern='{category}_5.json*'). Put them (gzipped or not) into one folder and
pass --config.data.manual_dir=<folder>; choose categories with
--config.data.categories="('Beauty','Clothing_Shoes_and_Jewelry','Health_and_Personal_Care')".
Each line must hold reviewerID, asin, overall and unixReviewTime.
"""


def data_config():
  return prepare.base_config(
      NAME,
      categories=('Beauty', 'Clothing_Shoes_and_Jewelry', 'Health_and_Personal_Care'),
      file_pattern='reviews_{category}_5.json*',
      csv_column_names=(),  # for CSV files without a header, e.g. (reviewerID, asin, overall, ...)
      rating_column='overall',
      time_column='unixReviewTime',
      positive_rating=4.0,
      scenario_field='category',  # derived from the file, not a field of the records
      label='label',  # derived from the rating
      min_count=2,
      ids_numeric=False,
      cat_columns=('reviewerID', 'asin'),
      split_fractions=(0.8, 0.1, 0.1))


def schema(cfg) -> prepare.Schema:
  return prepare.schema_from_config(cfg)


def _read(path: str, kinds: dict, cfg):
  """(columns, first line) chunks of one file, JSON lines or CSV."""
  name = path[:-3] if path.endswith('.gz') else path
  if name.endswith('.csv'):
    return reader.iter_csv(path, kinds, column_names=tuple(cfg.csv_column_names) or None,
                           progress=bool(cfg.progress))
  return reader.iter_json_lines(path, kinds, progress=bool(cfg.progress))


def source(cfg) -> prepare.Source:
  """Every category's file; the time split over all of them needs a first pass over the time
  column (8 bytes a row and its sort order while computing, then a 1-byte split per row)."""
  directory = prepare.manual_dir(cfg, INSTRUCTIONS)
  field, rating, when = str(cfg.scenario_field), str(cfg.rating_column), str(cfg.time_column)
  kinds = schema(cfg).kinds(exclude=(field, str(cfg.label)))
  kinds.update({rating: 'float', when: 'int'})
  if not cfg.categories:
    raise prepare.ConfigError('config.data.categories is empty')
  files = []
  for category in cfg.categories:
    pattern = str(cfg.file_pattern).format(category=category)
    paths = prepare.find_files(directory, pattern, f'Amazon category {category!r}', INSTRUCTIONS)
    if len(paths) > 1:
      raise prepare.DataError(f'Amazon category {category!r}: expected one file matching '
                              f'{pattern!r} in {directory!r}, found {paths}')
    files.append((str(category), paths[0]))
  times = []

  def compute():
    t, rows = prepare.column_of_files([p for _, p in files], when, 'int',
                                      read=lambda p, k: _read(p, k, cfg))
    times.append(rows)
    return prepare.time_assignment(t, cfg.split_fractions)

  splits = prepare.RowSplits(compute, lambda: times[0])

  def chunks():
    for i, (category, path) in enumerate(files):
      split = splits.for_file(i)
      row = 0
      for columns, first_line in _read(path, kinds, cfg):
        n = len(columns[when])
        columns[field] = prepare.constant_column(category, n)
        columns[str(cfg.label)] = pa.array(
            (columns[rating].to_numpy() >= float(cfg.positive_rating)).astype(np.float32))
        yield prepare.chunk_of(columns, path, first_line, split(row, n))
        row += n

  return prepare.Source(files=[p for _, p in files], chunks=chunks)


def load(cfg):
  return prepare.load_or_prepare(cfg, lambda: source(cfg), schema(cfg))

"""MIND and Douban in the single-CSV form of Scenario-Wise-Rec (one loader, two configs).

* MIND (`mind_sample.csv`: User_ID,News_ID,label,Category,SubCategory): scenario `Category`,
  label `label` (click), categorical string ids User_ID, News_ID, SubCategory.
* Douban (`douban_sample.csv`: user_id,item_id,rating,domain,living_place,join_time,time_bin):
  scenario `domain` (movie/book/music), label `rating` (already 0/1: rating > 3), categorical
  user_id, item_id, living_place (106 empty values: '' is a value of its own) and time_bin (the
  user's join month; `join_time` is the same information as a date).

Neither file has the time of the interaction, so the one file is split into train / validation /
test at random, deterministically by `seed` (`split_fractions`). A config with `time_column` set
splits by time instead (earliest rows train).
"""

from __future__ import annotations

from midpg_jax.data import prepare, reader

_SOURCE = 'https://github.com/Xiaopengli1/Scenario-Wise-Rec'


def _instructions(file: str, folder: str) -> str:
  return f"""\
{file} must be provided by you, in the format of Scenario-Wise-Rec ({_SOURCE},
scripts/data/{folder}/{file}; the full preprocessed data are linked from its README). Put it into
a folder and pass --config.data.manual_dir=<folder> (another name: --config.data.file=<name>).
Scenario-Wise-Rec's own *_sample.csv files show the format.
"""


def _config(name, file, folder, **fields):
  return prepare.base_config(
      name, file=file, source_folder=folder, delimiter=',', min_count=1, ids_numeric=False,
      time_column='', split_fractions=(0.8, 0.1, 0.1), seed=0, **fields)


def mind_config():
  return _config('mind', 'mind_sample.csv', 'mind', scenario_field='Category', label='label',
                 cat_columns=('User_ID', 'News_ID', 'SubCategory'))


def douban_config():
  return _config('douban', 'douban_sample.csv', 'douban', scenario_field='domain', label='rating',
                 cat_columns=('user_id', 'item_id', 'living_place', 'time_bin'))


def schema(cfg) -> prepare.Schema:
  return prepare.schema_from_config(cfg)


def instructions(cfg) -> str:
  return _instructions(str(cfg.file), str(cfg.source_folder))


def source(cfg) -> prepare.Source:
  """The file(s) split at random (a first pass counts the rows) or by `time_column`."""
  text = instructions(cfg)
  directory = prepare.manual_dir(cfg, text)
  paths = prepare.find_files(directory, str(cfg.file), cfg.name, text)
  kinds = schema(cfg).kinds()
  delimiter = str(cfg.delimiter)
  read = lambda p, k: reader.iter_csv(p, k, delimiter=delimiter)  # noqa: E731
  if cfg.time_column:
    kinds[str(cfg.time_column)] = 'int'
  rows = []

  def compute():
    column = str(cfg.time_column) if cfg.time_column else str(cfg.label)
    values, per_file = prepare.column_of_files(paths, column, kinds[column], read=read)
    rows.append(per_file)
    if cfg.time_column:
      return prepare.time_assignment(values, cfg.split_fractions)
    return prepare.random_assignment(len(values), cfg.split_fractions, int(cfg.seed))

  splits = prepare.RowSplits(compute, lambda: rows[0])

  def chunks():
    for i, path in enumerate(paths):
      yield from prepare.read_chunks(path, kinds, splits.for_file(i), delimiter=delimiter,
                                     progress=bool(cfg.progress))

  return prepare.Source(files=paths, chunks=chunks)


def load(cfg):
  return prepare.load_or_prepare(cfg, lambda: source(cfg), schema(cfg))

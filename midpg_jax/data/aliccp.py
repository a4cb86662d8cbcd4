"""Ali-CCP (Alibaba click and conversion prediction) in the CSV form of Scenario-Wise-Rec.

Raw files: `ali_ccp_train*.csv`, `ali_ccp_val*.csv`, `ali_ccp_test*.csv` (each pattern may match
several files, read in name order), comma-separated with a header line:

  click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,210,216,508,509,702,853,301,
  109_14,110_14,127_14,150_14,D109_14,D110_14,D127_14,D150_14,D508,D509,D702,D853

* label `purchase`; by default on clicked rows only (`click == 1`: post-click conversion, the
  CVR task), `clicked_only=False` trains and evaluates on the entire impression space;
* scenario field `301` with the fixed values (1, 2, 3) (so a value missing from the clicked
  training rows of a small sample is still known);
* every other column is an integer-encoded categorical id, except the 8 dense `D*` columns;
* the three files are the train / validation / test splits.

The raw Tianchi release (sample_skeleton_* + common_features_*) is read too, streaming, by
`aliccp_raw.py`, which yields the same columns: `file_format='auto'` (default) picks it when
`manual_dir` holds `sample_skeleton_train.csv[.gz]`.
"""

from __future__ import annotations

import numpy as np

from midpg_jax.data import aliccp_raw, prepare, reader, sources

NAME = 'aliccp'

INSTRUCTIONS = """\
Ali-CCP must be downloaded by you, as CSV files in the format of Scenario-Wise-Rec
(https://github.com/Xiaopengli1/Scenario-Wise-Rec, scripts/data/ali-ccp: its README links the
full preprocessed files; its *_sample.csv files show the format):
  ali_ccp_train.csv, ali_ccp_val.csv, ali_ccp_test.csv
with the header click,purchase,101,...,301,...,D853 (33 columns, all ids integer-encoded).
Put them into one folder and pass it as --config.data.manual_dir=<folder>. Other names:
--config.data.train_files / validation_files / test_files (glob patterns; .csv.gz also works).
Or the raw Tianchi release instead (read directly, streaming; midpg_jax/data/aliccp_raw.py):
""" + aliccp_raw.INSTRUCTIONS

SPARSE_COLUMNS = ('101', '121', '122', '124', '125', '126', '127', '128', '129', '205', '206',
                  '207', '210', '216', '508', '509', '702', '853', '109_14', '110_14', '127_14',
                  '150_14')
DENSE_COLUMNS = ('D109_14', 'D110_14', 'D127_14', 'D150_14', 'D508', 'D509', 'D702', 'D853')


def data_config():
  return prepare.base_config(
      NAME,
      train_files='ali_ccp_train*.csv',
      validation_files='ali_ccp_val*.csv',
      test_files='ali_ccp_test*.csv',
      exclude_files=('*_sample.csv', '*_sample.csv.gz'),
      # 'auto': the raw Tianchi release when manual_dir holds sample_skeleton_train.csv[.gz],
      # else the Scenario-Wise-Rec CSV form; or force 'raw_release' / 'swr_csv'.
      file_format='auto',
      scenario_field='301',
      scenario_values=(1, 2, 3),
      label='purchase',
      click_column='click',
      clicked_only=True,  # False: the entire space (every impression)
      cat_columns=SPARSE_COLUMNS,
      dense_columns=DENSE_COLUMNS)


def schema(cfg) -> prepare.Schema:
  return prepare.schema_from_config(cfg)


def split_files(cfg) -> dict[str, list[str]]:
  """{split: the files read for it}; `*_sample.csv` files (Scenario-Wise-Rec's samples, often
  kept in the same folder) never match, or they would be merged into the full data."""
  directory = prepare.manual_dir(cfg, INSTRUCTIONS)
  return {split: prepare.find_files(directory, str(pattern), f'Ali-CCP {split} split',
                                    INSTRUCTIONS, exclude=tuple(cfg.exclude_files))
          for split, pattern in (('train', cfg.train_files), ('validation', cfg.validation_files),
                                 ('test', cfg.test_files))}


def csv_column_chunks(path: str, kinds: dict, progress: bool):
  """(columns, first line) chunks of one file in the Scenario-Wise-Rec CSV form."""
  return reader.iter_csv(path, kinds, progress=progress)


# The one place that knows the file format: a reader of another form of Ali-CCP (e.g. the raw
# Tianchi release) plugs in here as a function (path, kinds, progress) -> iterator of
# (columns {name: pa.Array} in the Scenario-Wise-Rec form, line of the chunk's first row).
COLUMN_READERS = {'swr_csv': csv_column_chunks}


FILE_FORMATS = ('auto', 'raw_release', *COLUMN_READERS)


def raw_release_source(cfg, keep) -> prepare.Source:
  """The raw release's four files, streamed as chunks of Scenario-Wise-Rec columns per split."""
  directory = prepare.manual_dir(cfg, INSTRUCTIONS)
  skeletons = {part: aliccp_raw.release_file(directory, f'sample_skeleton_{part}')
               for part in ('train', 'test')}
  files = [*skeletons.values(),
           *(aliccp_raw.release_file(directory, f'common_features_{part}')
             for part in ('train', 'test'))]
  wanted = set(schema(cfg).kinds()) | {str(cfg.click_column)}

  def chunks():
    for split in sources.SPLITS:
      path = skeletons['train' if split == 'train' else 'test']
      for columns, _ in aliccp_raw.iter_raw_aliccp(directory, split, progress=bool(cfg.progress)):
        lines = np.asarray(columns[aliccp_raw.LINE].to_numpy(), np.int64)
        chunk = sources.Chunk({k: v for k, v in columns.items() if k in wanted}, path, lines,
                              split)
        yield chunk if keep is None else chunk.take(np.asarray(keep(columns), bool))

  return prepare.Source(files=files, chunks=chunks)


def source(cfg) -> prepare.Source:
  kinds = schema(cfg).kinds()
  click = str(cfg.click_column)
  keep = None
  if cfg.clicked_only:
    kinds.setdefault(click, 'label')
    keep = lambda columns: columns[click].to_numpy() == 1  # noqa: E731
  file_format = str(cfg.file_format)
  if file_format not in FILE_FORMATS:
    raise prepare.ConfigError(f'unknown config.data.file_format {cfg.file_format!r}; known: '
                              f'{list(FILE_FORMATS)}')
  if file_format == 'auto':
    file_format = ('raw_release' if aliccp_raw.detect_raw_release(
        prepare.manual_dir(cfg, INSTRUCTIONS)) else 'swr_csv')
  if file_format == 'raw_release':
    return raw_release_source(cfg, keep)
  files = split_files(cfg)
  read = COLUMN_READERS[file_format]

  def chunks():
    for split, paths in files.items():
      for path in paths:
        for columns, first_line in read(path, kinds, bool(cfg.progress)):
          yield prepare.chunk_of(columns, path, first_line, split, keep)

  return prepare.Source(files=[p for ps in files.values() for p in ps], chunks=chunks)


def load(cfg):
  return prepare.load_or_prepare(cfg, lambda: source(cfg), schema(cfg))

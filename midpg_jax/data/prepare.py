"""Preparing a real dataset once: raw files -> model-ready columnar `.npy` files read by memory map.

Every real dataset (IAAC, Ali-CCP, AliExpress, Amazon, MIND, Douban) goes through the same steps;
the dataset modules only say which files to read and how to split them (a `sources.Source`):

1. reader.py: the raw files are read in chunks, every value checked (a bad one is an error naming
   the file, line and column);
2. first pass (fit.py): on the training rows, count the ids of every field, the dense moments and
   the scenario values; check the scenario values of validation / test; fit the `Encoder`
   (encode.py): vocabularies with `min_count` (id 0 = out of vocabulary), dense scaling, the
   scenario mapping to [0, S);
3. second pass (store.py): the same chunks, read back from the first pass's spill (spill.py: an
   Arrow file, so the text is parsed once), encoded by the Encoder, written straight into
   memory-mapped `.npy` files of the row counts of the first pass.

Peak memory does not depend on the number of rows: it is one chunk (16 MB of text and its columns)
plus the counts of the vocabularies (see fit.py), plus, for datasets split by time or at random,
17 bytes a row while computing the split, then 1 (sources.py).

Everything is written into a temporary folder beside `prepared_dir`, then renamed into place: a
failed run never leaves a half-written dataset and never touches one prepared earlier; a full disk
or an unwritable folder is one line (`StorageError`), and the temporary folder of a run that was
killed (kill -9) is removed by the next preparation of the same folder (`files.staging_dir`).

A prepared dataset is reused while the data config it was made from (everything in `config.data`
except `manual_dir`, `prepared_dir`, `progress` and `rebuild`) and its source files (path, size,
modification time) are unchanged. Changed sources: it is prepared again, with a line saying why.
Another config: an error (delete it, point `prepared_dir` elsewhere or set `rebuild=True`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Callable, Iterable

import ml_collections
import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from midpg_jax import files
from midpg_jax.data import encode, fit, spill, store
from midpg_jax.data.encode import MultiField
from midpg_jax.data.schema import Columns, FeatureSpec
from midpg_jax.data.sources import (SPLITS, Chunk, RowSplits, Source, chunk_of,  # noqa: F401
                                    column_of_files, constant_column, find_files, manual_dir,
                                    random_assignment, read_chunks, time_assignment)
from midpg_jax.data.store import (fingerprint, load_prepared, prepared_path,  # noqa: F401
                                  read_meta)
from midpg_jax.errors import ConfigError, DataError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)


def base_config(name: str, **fields) -> ml_collections.ConfigDict:
  """The config.data keys every real dataset has, plus the dataset's own `fields`."""
  d = ml_collections.ConfigDict()
  d.name = name
  d.manual_dir = ''  # the folder with the user's downloaded files (see the module's INSTRUCTIONS)
  d.prepared_dir = ''  # '' = data_cache/<name> (relative to the working directory)
  d.progress = True  # tqdm bars while preparing
  d.rebuild = False  # prepare again even if prepared_dir holds this dataset
  d.min_count = 5  # ids seen fewer times in the training split share id 0 (out of vocabulary)
  d.dense_scaling = 'standard'  # 'standard' | 'minmax' | 'none', fitted on the training split
  d.scenario_values = ()  # () = the values in the training split, sorted; else the fixed list
  d.ids_numeric = True  # categorical columns hold integer ids (else any string)
  d.cat_columns = ()
  d.multi_columns = ml_collections.ConfigDict()  # name -> {sep, max_len, part_sep}
  d.dense_columns = ()
  for k, v in fields.items():
    d[k] = v
  return d


@dataclasses.dataclass(frozen=True)
class Schema:
  """The roles of a dataset's columns (after the dataset module derived any it needs)."""

  scenario: str
  label: str
  cat: tuple[str, ...] = ()
  multi: tuple[MultiField, ...] = ()
  dense: tuple[str, ...] = ()
  ids_numeric: bool = True  # cat columns hold integer ids ('id') rather than strings ('token')

  def kinds(self, exclude: Iterable[str] = ()) -> dict[str, str]:
    """{raw column: reader kind} to read, leaving out derived columns `exclude`."""
    kinds = {c: 'id' if self.ids_numeric else 'token' for c in self.cat}
    kinds.update({m.name: 'token' for m in self.multi})
    kinds.update({c: 'float' for c in self.dense})
    kinds.update({self.scenario: 'scenario', self.label: 'label'})
    return {c: k for c, k in kinds.items() if c not in set(exclude)}


def schema_from_config(cfg) -> Schema:
  """The Schema of config.data fields cat_columns, multi_columns, dense_columns, scenario_field,
  label; the scenario field is never also a categorical feature."""
  multi = tuple(MultiField(name, str(m.sep), int(m.max_len), str(m.get('part_sep', '')))
                for name, m in sorted(dict(cfg.get('multi_columns', {})).items()))
  for m in multi:
    if m.max_len <= 0 or not m.sep:
      raise ConfigError(f'config.data.multi_columns.{m.name} needs sep and max_len > 0')
  return Schema(scenario=str(cfg.scenario_field), label=str(cfg.label),
                cat=tuple(c for c in cfg.cat_columns if c != cfg.scenario_field),
                multi=multi, dense=tuple(cfg.get('dense_columns', ())),
                ids_numeric=bool(cfg.get('ids_numeric', True)))


# ------------------------------------------------------------------------------------------------
# The two passes.


def _dense(chunk: Chunk, names) -> np.ndarray:  # (n, D) float64, unscaled
  if not names:
    return np.zeros((len(chunk), 0))
  return np.stack([encode._as_arrow(chunk.columns[c], pa.float64()).to_numpy(
      zero_copy_only=False) for c in names], axis=1)


def fit_pass(source: Source, schema: Schema, cfg,
             keep: spill.Spill) -> tuple[encode.Encoder, dict[str, int]]:
  """Reads every chunk once: fits the Encoder on the training rows, counts the rows per split;
  keeps the chunks in `keep` for the second pass."""
  counts = {name: fit.IdCounts() for name in (*schema.cat, *(m.name for m in schema.multi))}
  moments = fit.Moments(len(schema.dense))
  seen = fit.ScenarioSeen()
  rows = {s: 0 for s in SPLITS}
  files = {s: set() for s in SPLITS}
  for chunk in source.chunks():
    keep.add(chunk)
    for split, part in chunk.by_split():
      rows[split] += len(part)
      files[split].add(part.source)
      seen.add(split, part.columns[schema.scenario], part.source, part.lines)
      if split != 'train':
        continue
      for name in schema.cat:
        counts[name].add(part.columns[name])
      for m in schema.multi:
        counts[m.name].add(encode.tokenize(part.columns[m.name], m)[0])
      moments.add(_dense(part, schema.dense))
  for split in SPLITS:
    if rows[split] == 0:
      raise DataError(f'dataset {cfg.name!r}: the {split} split is empty (source: '
                      f'{sorted(files[split]) or sorted(source.files)}); check the files and the '
                      'split settings')
  keep.close()
  values = fit.scenario_values(seen, schema.scenario, tuple(cfg.get('scenario_values', ())),
                               SPLITS)
  return fit.fit_encoder(schema, cfg, counts, moments, values), rows


def write_pass(chunks: Iterable[Chunk], encoder: encode.Encoder, rows: dict[str, int],
               directory: str) -> dict:
  """Encodes every chunk and writes its columns; returns the split summaries."""
  writer = store.ColumnWriter(directory, encoder.spec, rows)
  for chunk in chunks:
    for split, part in chunk.by_split():
      writer.write(split, encoder.encode(part.columns, source=part.source, lines=part.lines))
  if writer.filled != rows:
    raise RuntimeError(f'rows per split {rows} in the first pass, {writer.filled} in the second')
  return writer.close()


def prepare_into(directory: str, source: Source, schema: Schema, cfg) -> dict:
  """Prepares the dataset into the (new, empty) `directory`; returns its meta.json content."""
  start = time.perf_counter()
  keep = spill.Spill(os.path.join(directory, '.first_pass.arrow'), schema.kinds())
  try:
    encoder, rows = fit_pass(source, schema, cfg, keep)
    summary = write_pass(keep.chunks(), encoder, rows, directory)
  finally:
    keep.remove()
  encoder.save(directory)
  spec = encoder.spec
  with open(os.path.join(directory, 'feature_spec.json'), 'w') as f:
    f.write(spec.to_json())
  with open(os.path.join(directory, 'scenarios.json'), 'w') as f:
    json.dump({'field': schema.scenario,
                     'mapping': {v: i for i, v in enumerate(encoder.scenario_values)},
                     'names': list(spec.scenario_names)}, f, indent=1, ensure_ascii=False)
  meta = {'format_version': store.FORMAT_VERSION, 'name': str(cfg.name),
          'fingerprint': fingerprint(cfg), 'config': store.fingerprinted_config(cfg),
          'prepared_at': time.strftime('%Y-%m-%d %H:%M:%S'),
          'seconds': round(time.perf_counter() - start, 2),
          'sources': store.source_stats(source.files), 'splits': summary,
          'dense_stats': {c: {'shift': float(a), 'scale': float(b),
                              'scaling': encoder.dense_scaling}
                          for c, a, b in zip(schema.dense, encoder.dense_shift,
                                             encoder.dense_scale)}}
  # meta.json last: its presence marks a complete folder.
  with open(os.path.join(directory, 'meta.json'), 'w') as f:
    json.dump(meta, f, indent=1, default=str, ensure_ascii=False)
  return meta


# ------------------------------------------------------------------------------------------------
# Reuse or prepare.


def _say(cfg, msg: str) -> None:
  log.warning(msg)
  if bool(cfg.get('progress', True)):
    tqdm.write(msg)


def _config_diff(old, new) -> list[str]:
  keys = sorted(set(old) | set(new))
  norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731 tuples/lists
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys
          if norm(old.get(k)) != norm(new.get(k))]


def load_or_prepare(cfg, make_source: Callable[[], Source],
                    schema: Schema) -> tuple[FeatureSpec, dict[str, Columns]]:
  """Loads the prepared dataset of `cfg`, preparing it first when there is none or its sources
  changed. `make_source()` locates the files (an error when `manual_dir` is missing)."""
  target = prepared_path(cfg)
  fp = fingerprint(cfg)
  rebuild = bool(cfg.get('rebuild', False))
  meta = read_meta(target)
  if meta is not None and meta.get('format_version') != store.FORMAT_VERSION:
    _say(cfg, f'{target} was prepared by another version of this code (format '
         f'{meta.get("format_version")}, now {store.FORMAT_VERSION}): preparing it again')
    rebuild = True
  if meta is not None and not rebuild and meta.get('fingerprint') != fp:
    diff = _config_diff(meta.get('config', {}), store.fingerprinted_config(cfg))
    raise DataError(f'{target} holds dataset {meta.get("name")!r} prepared with other settings '
                    f'({"; ".join(diff) or "another format version"}). Delete it, set '
                    'config.data.prepared_dir to another folder, or set config.data.rebuild=True '
                    '(it is replaced only once the new one is complete).')
  if meta is None and os.path.isdir(target) and os.listdir(target):
    raise DataError(f'{target} exists and is not a prepared dataset (no meta.json): set '
                    'config.data.prepared_dir to a new or empty folder')
  source = make_source()  # a missing manual_dir or file is an error even with a prepared copy
  if meta is not None and not rebuild:
    changed = store.sources_changed(meta.get('sources', []), store.source_stats(source.files))
    if not changed:
      log.info('using the dataset prepared in %s', target)
      return load_prepared(target)
    _say(cfg, f'{target}: the source files differ from those it was prepared from '
         f'({"; ".join(changed[:3])}{" ..." if len(changed) > 3 else ""}): preparing it again')
  start = time.perf_counter()
  with files.storage_errors(f'preparing {cfg.name} into {target}', kept=f'{target} is unchanged'), \
      files.staging_dir(target) as tmp:
    meta = prepare_into(tmp, source, schema, cfg)
    store.move_into_place(tmp, target, fp)
  msg = (f'prepared {cfg.name} in {time.perf_counter() - start:.1f}s into {target}: ' + ', '.join(
      f'{s} {meta["splits"][s]["rows"]:,} rows' for s in SPLITS))
  log.info(msg)
  if bool(cfg.get('progress', True)):
    tqdm.write(msg)
  return load_prepared(target)

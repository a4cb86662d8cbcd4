"""TFDS builders of the real datasets (array_record files; no TensorFlow needed).

Each builder turns the user's manual download into a TFDS dataset with one record per row of the
raw train / validation / test splits: exactly the rows (same reading, checking, filtering and
splitting code: the dataset module's `source`) that the columnar preparation in `prepare.py` uses, before any vocabulary or
scaling, so the records keep the raw ids and values:

  <categorical column>   int64 (integer ids) or text
  <multi-valued column>  sequence of text tokens (split as configured; not truncated)
  dense                  float32 (D,) in `dense_columns` order, unscaled (absent when D = 0)
  scenario               text, the raw scenario value
  label                  int64 0/1

Training does not read these records: it reads the columnar `.npy` files, which `prepare.py`
builds straight from the raw files because that is far faster than going through per-example
serialisation. The builders are for users who want the data as a TFDS dataset
(`tfds.data_source`, grain) or to inspect it.

This module imports tensorflow_datasets; import it only when a builder is wanted:

  from midpg_jax.data import tfds_builders
  builder = tfds_builders.build(config.data, data_dir='~/tensorflow_datasets')
  records = builder.as_data_source(split='train')
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from midpg_jax.data import (aliccp, aliexpress, amazon, encode, iaac, prepare, scenario_wise_rec,
                            sources)
from midpg_jax.errors import ConfigError


class _RawRowsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Records of the raw splits of one dataset, read by `module.source(config.data)`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Raw rows of the train / validation / test splits.'}
  module = None  # the dataset module: source(cfg), schema(cfg)

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup of the defining file needs the `importlib_resources` backport on a
    # package like ours (a namespace package); the file is known, so say it.
    return epath.Path(__file__)

  def __init__(self, *, data_config, **kwargs):
    self._data_cfg = data_config
    # The rows depend on the data config (filters, splits), so each config is its own
    # BuilderConfig, named by its fingerprint.
    fp = prepare.fingerprint(data_config)[:16]
    config = tfds.core.BuilderConfig(
        name=f'fp{fp}',
        description=f'{data_config.name} with the config.data of fingerprint {fp}')
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    schema = self.module.schema(self._data_cfg)
    cat = tfds.features.Scalar(np.int64) if schema.ids_numeric else tfds.features.Text()
    features = {name: cat for name in schema.cat}
    features.update({m.name: tfds.features.Sequence(tfds.features.Text()) for m in schema.multi})
    if schema.dense:
      features['dense'] = tfds.features.Tensor(shape=(len(schema.dense),), dtype=np.float32)
    features['scenario'] = tfds.features.Text()
    features['label'] = tfds.features.Scalar(np.int64)
    return tfds.core.DatasetInfo(
        builder=self, description=self.__class__.__doc__,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(dense_columns=list(schema.dense),
                                        scenario_field=schema.scenario))

  def _split_generators(self, dl_manager):
    cfg = self._data_cfg.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.manual_dir = os.fspath(dl_manager.manual_dir)
    chunks = sources.collect_splits(self.module.source(cfg))
    schema = self.module.schema(cfg)
    return {split: self._generate_examples(parts, schema) for split, parts in chunks.items()}

  def _generate_examples(self, chunks, schema: prepare.Schema):
    for chunk in chunks:
      cols = {name: _values(chunk.columns[name]) for name in schema.cat}
      for m in schema.multi:
        flat, lengths = encode.tokenize(chunk.columns[m.name], m)
        tokens = flat.to_pylist()
        ends = np.cumsum(lengths)
        cols[m.name] = [[t for t in tokens[e - k:e] if t] for e, k in zip(ends, lengths)]
      if schema.dense:
        dense = np.stack([np.asarray(_values(chunk.columns[c]), np.float32)
                          for c in schema.dense], axis=1)
        cols['dense'] = list(dense)
      cols['scenario'] = _values(chunk.columns[schema.scenario])
      cols['label'] = np.asarray(_values(chunk.columns[schema.label])).astype(np.int64).tolist()
      names = list(cols)
      for i, line in enumerate(chunk.lines):
        key = f'{os.path.basename(chunk.source)}:{line}'
        yield key, {name: cols[name][i] for name in names}


def _values(column) -> list:
  return column.tolist() if isinstance(column, np.ndarray) else column.to_pylist()


class MidpgIaac(_RawRowsBuilder):
  """IAAC (IJCAI-18 Alimama ad conversion), raw rows split by day."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = iaac.INSTRUCTIONS
  module = iaac


class MidpgAliccp(_RawRowsBuilder):
  """Ali-CCP in Scenario-Wise-Rec's CSV form, raw rows (clicked rows only by default)."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = aliccp.INSTRUCTIONS
  module = aliccp


class MidpgAliexpress(_RawRowsBuilder):
  """AliExpress, one scenario per country, raw rows (clicked rows only by default)."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = aliexpress.INSTRUCTIONS
  module = aliexpress


class MidpgAmazon(_RawRowsBuilder):
  """Amazon 5-core reviews, one scenario per category, raw rows split by time."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = amazon.INSTRUCTIONS
  module = amazon


class MidpgMind(_RawRowsBuilder):
  """MIND in Scenario-Wise-Rec's form, scenario = news category."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = scenario_wise_rec.instructions(
      scenario_wise_rec.mind_config())
  module = scenario_wise_rec


class MidpgDouban(_RawRowsBuilder):
  """Douban in Scenario-Wise-Rec's form, scenario = domain (movie / book / music)."""
  MANUAL_DOWNLOAD_INSTRUCTIONS = scenario_wise_rec.instructions(
      scenario_wise_rec.douban_config())
  module = scenario_wise_rec


BUILDERS = {'iaac': MidpgIaac, 'aliccp': MidpgAliccp, 'aliexpress': MidpgAliexpress,
            'amazon': MidpgAmazon, 'mind': MidpgMind, 'douban': MidpgDouban}


def builder(data_config, data_dir: str | None = None) -> _RawRowsBuilder:
  name = str(data_config.name)
  if name not in BUILDERS:
    raise ConfigError(f'no TFDS builder for dataset {name!r}; there are {sorted(BUILDERS)}')
  return BUILDERS[name](data_config=data_config,
                        data_dir=os.path.expanduser(data_dir) if data_dir else None)


def build(data_config, data_dir: str | None = None) -> _RawRowsBuilder:
  """Prepares (once) the TFDS dataset of `data_config` from `data_config.manual_dir`."""
  b = builder(data_config, data_dir)
  manual = prepare.manual_dir(data_config, b.MANUAL_DOWNLOAD_INSTRUCTIONS)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  return b

"""What a multi-scenario dataset looks like to the models: its feature schema and its columns.

Every dataset (the built-in synthetic one and the real ones) is reduced to the same columnar form:

  cat       (N, F)     int32    one id per single-valued categorical field, 0 = out-of-vocabulary
  multi/<f> (N, L_f)   int32    multi-valued fields, padded with 0 (0 is never a real id there)
  dense     (N, D)     float32  already scaled
  scenario  (N,)       int32    in [0, S)
  label     (N,)       float32  in {0, 1}
  prob      (N,)       float32  true conversion probability (synthetic data only)

Models see only the `FeatureSpec`, so a model built for one dataset is built from its schema
alone and never from the data.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping

import numpy as np

from midpg_jax import inputs
from midpg_jax.errors import DataError

Columns = dict  # name -> np.ndarray, all with the same first dimension


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """Schema of a multi-scenario dataset."""

  cat_names: tuple[str, ...]
  cat_vocab_sizes: tuple[int, ...]  # including id 0 (OOV)
  dense_names: tuple[str, ...]
  scenario_names: tuple[str, ...]
  multi_names: tuple[str, ...] = ()
  multi_vocab_sizes: tuple[int, ...] = ()  # including id 0 (padding)
  multi_max_lens: tuple[int, ...] = ()
  # sha256 of the Encoder that made these columns from raw values (encode.py: vocabularies,
  # scenario map, dense scaling); '' without one (the synthetic dataset, data prepared before
  # fingerprints). Not compared: datasets of the same shapes build the same model, whatever their
  # vocabularies hold; `check_same_encoding` compares it where a run meets data.
  encoder_fingerprint: str = dataclasses.field(default='', compare=False)

  def __post_init__(self):
    if len(self.cat_names) != len(self.cat_vocab_sizes):
      raise ValueError('cat_names and cat_vocab_sizes differ in length: '
                       f'{len(self.cat_names)} vs {len(self.cat_vocab_sizes)}')
    if not (len(self.multi_names) == len(self.multi_vocab_sizes) == len(self.multi_max_lens)):
      raise ValueError('multi_names, multi_vocab_sizes and multi_max_lens differ in length')
    if not self.scenario_names:
      raise ValueError('a dataset needs at least one scenario')

  @property
  def num_scenarios(self) -> int:
    return len(self.scenario_names)

  @property
  def num_dense(self) -> int:
    return len(self.dense_names)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1)

  @classmethod
  def from_json(cls, text: str) -> 'FeatureSpec':
    d = json.loads(text)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def load_spec(path: str) -> FeatureSpec:
  """The FeatureSpec in a feature_spec.json (of a run or a prepared dataset)."""
  try:
    with open(path) as f:
      return FeatureSpec.from_json(f.read())
  except (ValueError, TypeError) as e:
    raise DataError(f'{path} is unreadable ({e}); it is written by train.py and by preparation: '
                    'restore it, or prepare / train again') from e


def check_same_encoding(trained: FeatureSpec, given: FeatureSpec, run: str, data: str) -> None:
  """DataError when columns of spec `given` (from `data`) are not encoded as those `run` was
  trained on (spec `trained`): other encoder fingerprints, or, where one side has none (made
  before fingerprints), other shapes. Other vocabularies would score every row with another
  id's embedding: plausible numbers, or NaN for an id beyond the run's tables."""
  if trained.encoder_fingerprint and given.encoder_fingerprint:
    if trained.encoder_fingerprint == given.encoder_fingerprint:
      return
    why = (f'encoder fingerprint {given.encoder_fingerprint[:12]}, the run\'s '
           f'{trained.encoder_fingerprint[:12]}')
  else:
    differing = [f.name for f in dataclasses.fields(FeatureSpec)
                 if f.compare and getattr(trained, f.name) != getattr(given, f.name)]
    if not differing:
      return
    name = differing[0]
    why = f'{name} {getattr(given, name)}, the run\'s {getattr(trained, name)}'
  raise DataError(f'{data} is not the data {run} was trained on ({why}): it was prepared from '
                  'other files or with other settings; use the prepared dataset the run was '
                  'trained on, or train again')


def num_rows(columns: Mapping[str, np.ndarray]) -> int:
  return int(len(columns['label']))


def validate_columns(columns: Mapping[str, np.ndarray], spec: FeatureSpec, where: str) -> None:
  """Checks the invariants above; raises ValueError naming `where` and the offending column."""
  for key in ('cat', 'dense', 'scenario', 'label'):
    if key not in columns:
      raise DataError(f'{where}: missing column {key!r}')
  n = num_rows(columns)
  if n == 0:
    raise DataError(f'{where}: the split is empty')
  for key, arr in columns.items():
    if key == 'multi':
      for name, m in arr.items():
        if len(m) != n:
          raise DataError(f'{where}: multi-valued column {name!r} has {len(m)} rows, expected {n}')
      continue
    if len(arr) != n:
      raise DataError(f'{where}: column {key!r} has {len(arr)} rows, expected {n}')
  if columns['cat'].shape[1:] != (len(spec.cat_names),):
    raise DataError(f'{where}: cat has shape {columns["cat"].shape}, '
                     f'expected (N, {len(spec.cat_names)})')
  if columns['dense'].shape[1:] != (spec.num_dense,):
    raise DataError(f'{where}: dense has shape {columns["dense"].shape}, '
                     f'expected (N, {spec.num_dense})')
  # Row blocks, so a memory-mapped split of any size is checked without full-size temporaries.
  for lo in range(0, n, _VALIDATE_ROWS):
    _validate_rows(columns, spec, where, lo, min(n, lo + _VALIDATE_ROWS))


_VALIDATE_ROWS = 1 << 20


def _validate_rows(columns, spec: FeatureSpec, where: str, lo: int, hi: int) -> None:
  label = np.asarray(columns['label'][lo:hi])
  bad = ~np.isin(label, (0.0, 1.0))
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(f'{where}: label outside {{0, 1}} at row {lo + i}: {label[i]!r}')
  inputs.check_finite(np.asarray(columns['dense'][lo:hi]), spec.dense_names, where, lo)
  inputs.check_ids(np.asarray(columns['scenario'][lo:hi]), spec.num_scenarios, ['scenario'],
                   where, lo)
  inputs.check_ids(np.asarray(columns['cat'][lo:hi]), spec.cat_vocab_sizes,
                   [f'field {c!r}' for c in spec.cat_names], where, lo)

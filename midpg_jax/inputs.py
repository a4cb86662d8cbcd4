"""Checks of encoded model inputs: what a trained model may be given.

A model gathers its embedding rows with `jnp.take`, which returns NaN for an index outside the
table, and reads a scenario id outside [0, S) as no scenario at all, so an id out of range gives a
NaN or a plausible but wrong probability, never an error. `checked` is the gate in front of every
scoring entry point that takes encoded columns (`Run.predict_columns`, the serving export's
`predict_columns`) and the block check of prepared splits (`schema.validate_columns`). It needs
only numpy, so the serving loader imports it without the data or training code.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from midpg_jax.errors import DataError


def check_ids(ids: np.ndarray, sizes, names, where: str, first_row: int = 0) -> None:
  """DataError at the first id of column j of `ids` ((N,) or (N, F)) outside [0, sizes[j]);
  `names[j]` names the column (one name and one size: every column)."""
  ids = np.asarray(ids)
  if ids.size == 0:
    return
  table = ids.reshape(len(ids), -1)
  sizes = np.broadcast_to(np.asarray(sizes), table.shape[1:])
  if table.min() >= 0 and (table.max(axis=0) < sizes).all():  # 2 reductions, no mask
    return
  row, col = np.argwhere((table < 0) | (table >= sizes))[0]
  name = names[col] if len(names) > 1 else names[0]
  raise DataError(f'{where}: {name} id {table[row, col]} at row {first_row + row} is outside '
                  f'[0, {sizes[col]})')


def check_finite(dense: np.ndarray, names, where: str, first_row: int = 0) -> None:
  """DataError at the first NaN or inf of `dense` (N, D)."""
  finite = np.isfinite(dense)
  if not finite.all():
    row, col = np.argwhere(~finite)[0]
    raise DataError(f'{where}: non-finite dense feature {names[col]!r} at row '
                    f'{first_row + row}: {dense[row, col]}')


def _integers(values, name: str, where: str) -> np.ndarray:
  """`values` as an integer array, as given: its range is checked before the cast to int32
  (which would wrap an id beyond 2**31 into the vocabulary)."""
  array = np.asarray(values)
  if array.dtype.kind not in 'iu':  # a float or string id would be truncated or misread
    raise DataError(f'{where}: {name} must hold integer ids, got dtype {array.dtype}')
  return array


def _shape(array: np.ndarray, name: str, expected: tuple, where: str) -> None:
  if array.shape != expected:
    shown = ', '.join(['N', *map(str, expected[1:])])
    raise DataError(f'{where}: {name} has shape {array.shape}, expected ({shown}) with N = '
                    f'{expected[0]}, the rows of scenario')


def checked(columns: Mapping[str, Any], spec: Mapping[str, Any],
            where: str = 'encoded columns') -> dict:
  """{'cat' (N, F) int32, 'dense' (N, D) float32, 'scenario' (N,) int32[, 'multi': {name:
  (N, L) int32}]} of `columns`, or a DataError naming the column, row and value: a missing column,
  a wrong shape, ids that are not integers, an id outside its vocabulary or a scenario outside
  [0, S), a NaN or inf dense value. `spec`: a FeatureSpec's fields (`dataclasses.asdict(spec)`,
  or an export's spec.json)."""
  needed = ['cat', 'dense', 'scenario'] + (['multi'] if spec['multi_names'] else [])
  missing = [k for k in needed if k not in columns]
  if missing:
    raise DataError(f'{where} lack {missing}; expected {needed}')
  scenario = _integers(columns['scenario'], 'scenario', where)
  if scenario.ndim != 1:
    raise DataError(f'{where}: scenario has shape {scenario.shape}, expected (N,)')
  n = len(scenario)
  cat = _integers(columns['cat'], 'cat', where)
  _shape(cat, 'cat', (n, len(spec['cat_names'])), where)
  dense = np.asarray(columns['dense'])
  if dense.dtype.kind not in 'iuf':
    raise DataError(f'{where}: dense must hold numbers, got dtype {dense.dtype}')
  dense = np.ascontiguousarray(dense, np.float32)
  _shape(dense, 'dense', (n, len(spec['dense_names'])), where)
  check_ids(scenario, len(spec['scenario_names']), ['scenario'], where)
  check_ids(cat, spec['cat_vocab_sizes'], [f'field {c!r}' for c in spec['cat_names']], where)
  check_finite(dense, spec['dense_names'], where)
  out = {'cat': np.ascontiguousarray(cat, np.int32), 'dense': dense,
         'scenario': np.ascontiguousarray(scenario, np.int32)}
  if spec['multi_names']:
    out['multi'] = {}
    for name, size, length in zip(spec['multi_names'], spec['multi_vocab_sizes'],
                                  spec['multi_max_lens']):
      if name not in columns['multi']:
        raise DataError(f'{where}: multi lacks the multi-valued field {name!r}')
      ids = _integers(columns['multi'][name], f'multi[{name!r}]', where)
      _shape(ids, f'multi[{name!r}]', (n, length), where)
      check_ids(ids, size, [f'multi-valued field {name!r}'], where)
      out['multi'][name] = np.ascontiguousarray(ids, np.int32)
  return out

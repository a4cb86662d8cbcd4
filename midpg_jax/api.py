"""The Python API for notebooks: a trained run, its metrics, and predictions on new rows.

  import midpg_jax
  run = midpg_jax.load_run('runs/aliccp')
  run.config.model.name, run.spec.scenario_names, run.final_metrics['test']['overall']['auc']
  probs = run.predict('new_rows.csv')      # or a pandas DataFrame, or {column: values}

`predict` takes rows as the source files have them (their column names and raw values) and
applies what preparation fitted on the training split (vocabularies with id 0 for unknown ids,
multi-value tokenisation, dense scaling, the scenario map) through the same `Encoder` that
preparation used (midpg_jax/data/encode.py), so a row scores the same here as in `eval.py`. A run
on the built-in synthetic dataset has no raw form: `predict` then takes encoded columns
({'cat', 'dense', 'scenario'[, 'multi']}, see midpg_jax/data/schema.py).

Nothing is scored silently wrong (docs/robustness.md): the Encoder must be the one the run was
trained with (its fingerprint, `schema.check_same_encoding`); raw values in memory are checked as
a file's are (`Encoder.encode_rows`: a DataError names the column and the row); encoded columns
are checked against the run's spec (`inputs.checked`: shapes, integer ids inside their
vocabularies, scenarios in [0, S), finite dense values).

The best checkpoint (or `checkpoint='latest'`) is restored onto one device; nothing is trained and
no dataset is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from midpg_jax import checkpoint, evaluation, inputs, run_config
from midpg_jax.checkpoint import Checkpointer
from midpg_jax.data.encode import ENCODER_FILE, Encoder
from midpg_jax.data.schema import Columns, FeatureSpec, check_same_encoding, load_spec
from midpg_jax.errors import CheckpointError, ConfigError, DataError
from midpg_jax.models import build_model
from midpg_jax.train_state import create_train_state, make_optimizer, make_predict_step

_ENCODED_KEYS = ('cat', 'dense', 'scenario')


def example_columns(spec: FeatureSpec, n: int) -> Columns:
  """n all-zero rows of `spec`'s columns: enough to build a model's variables (shapes only)."""
  cols = {'cat': np.zeros((n, len(spec.cat_names)), np.int32),
          'dense': np.zeros((n, spec.num_dense), np.float32),
          'scenario': np.zeros(n, np.int32), 'label': np.zeros(n, np.float32),
          'weight': np.ones(n, np.float32)}
  if spec.multi_names:
    cols['multi'] = {name: np.zeros((n, length), np.int32)
                     for name, length in zip(spec.multi_names, spec.multi_max_lens)}
  return cols


def restore_variables(config, spec: FeatureSpec, workdir: str, kind: str = 'best'):
  """(model, state) of the `kind` checkpoint of `workdir`, on the default device.

  The state is the checkpoint's TrainState with the optimizer state dropped (prediction needs
  `params` and `model_state` only).
  """
  model = build_model(config.model, spec)
  # The optimizer only shapes the state's type; its saved state is read as it is and dropped.
  tx = make_optimizer(config.train, total_steps=1)
  sample = example_columns(spec, 2)
  shapes = jax.eval_shape(lambda: create_train_state(model, tx, sample,
                                                     jax.random.key(int(config.seed))))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                                 sharding=device), shapes)
  checkpoint.require(workdir, kind)
  checkpointer = Checkpointer(workdir, create=False)
  try:
    state, _ = checkpointer.restore(kind, target, weights_only=True)
  finally:
    checkpointer.close()
  return model, state


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def find_prepared_dir(config, workdir: str) -> str | None:
  """The prepared dataset folder of a run (where preparation saved the Encoder), or None.

  `config.data.prepared_dir` (default data_cache/<name>) is relative to the folder training ran
  in, which is not recorded: tried relative to the working directory, then to each folder above
  the workdir (e.g. the checkout holding runs/<name>).
  """
  data = config.data
  if data.name == 'synthetic':
    return None
  relative = str(data.get('prepared_dir', '') or os.path.join('data_cache', data.name))
  if os.path.isabs(relative):
    return relative if os.path.isdir(relative) else None
  candidates = [os.getcwd()]
  folder = os.path.abspath(workdir)
  while os.path.dirname(folder) != folder:
    folder = os.path.dirname(folder)
    candidates.append(folder)
  for base in candidates:
    path = os.path.join(base, relative)
    if os.path.isfile(os.path.join(path, ENCODER_FILE)):
      return path
  return None


def concat_columns(parts: list[Columns]) -> Columns:
  """Rows of several encoded column dicts, one after another."""
  out = {}
  for key, first in parts[0].items():
    out[key] = (concat_columns([p[key] for p in parts]) if isinstance(first, Mapping)
                else np.concatenate([p[key] for p in parts]))
  return out


@dataclasses.dataclass
class Run:
  """A trained run folder: what it was trained with, how it went, and its predictions."""

  workdir: str
  config: ml_collections.ConfigDict  # from <workdir>/config.json
  spec: FeatureSpec  # from <workdir>/feature_spec.json
  metrics: list[dict]  # <workdir>/metrics.jsonl: one record per evaluation
  final_metrics: dict | None  # <workdir>/final_metrics.json (None while training is unfinished)
  checkpoint: str = 'best'
  prepared_dir: str | None = None  # the prepared dataset (its Encoder); None: encoded rows only

  @functools.cached_property
  def _restored(self):
    model, state = restore_variables(self.config, self.spec, self.workdir, self.checkpoint)
    return model, state, jax.jit(make_predict_step(model))

  @property
  def model(self):
    """The Flax module (built from the run's config and spec)."""
    return self._restored[0]

  @property
  def state(self):
    """The restored TrainState (params, model_state; no optimizer state)."""
    return self._restored[1]

  @functools.cached_property
  def encoder(self):
    """The Encoder that preparation fitted (raises DataError when the run has none, or when
    `prepared_dir` holds another one than the run was trained with)."""
    if self.prepared_dir is None:
      raise DataError(f'run {self.workdir!r} (dataset {self.config.data.name!r}) has no prepared '
                      'dataset to encode raw rows with: pass encoded columns {cat, dense, '
                      'scenario}, or load_run(..., prepared_dir=<the folder preparation wrote>)')
    encoder = Encoder.load(self.prepared_dir)
    check_same_encoding(self.spec, encoder.spec, f'the run in {self.workdir}',
                        f'prepared_dir {self.prepared_dir}')
    return encoder

  @property
  def batch_size(self) -> int:
    return int(self.config.train.eval_batch_size)

  def predict_columns(self, columns: Mapping[str, Any], batch_size: int | None = None
                      ) -> np.ndarray:
    """Probabilities (N,) float32 of encoded columns {'cat', 'dense', 'scenario'[, 'multi']},
    checked against the run's spec (`inputs.checked`: a DataError names the column, row, value).

    `batch_size` defaults to the run's train.eval_batch_size, as eval.py batches: the results are
    then bit-identical to eval.py's; other sizes agree to float32 rounding.
    """
    cols = inputs.checked(columns, dataclasses.asdict(self.spec))
    cols['label'] = np.zeros(len(cols['scenario']), np.float32)  # only counts the rows
    if len(cols['label']) == 0:
      return np.zeros(0, np.float32)
    _, state, predict_fn = self._restored
    # By default the same batching as eval.py (eval_batch_size, padded last batch).
    return evaluation.predict(predict_fn, state, cols, int(batch_size or self.batch_size))

  def encode(self, rows, *, source: str = '<rows>') -> Columns:
    """Raw rows (DataFrame, {column: values} or a CSV path) -> encoded columns."""
    if isinstance(rows, (str, os.PathLike)):
      return self._encode_csv(os.fspath(rows))
    return self.encoder.encode_rows(rows, source=source)

  def _encode_csv(self, path: str) -> Columns:
    from midpg_jax.data.reader import iter_csv
    encoder = self.encoder
    parts = [encoder.encode(chunk, source=path, first_line=line, with_label=False)
             for chunk, line in iter_csv(path, feature_kinds(encoder))]
    if not parts:
      raise DataError(f'{path}: no data rows')
    return concat_columns(parts)


  def predict(self, rows) -> np.ndarray:
    """Conversion probabilities (N,) float32, in the order of `rows`.

    `rows`: a CSV path, a pandas DataFrame or a dict of columns, with the source files' column
    names and raw values (extra columns such as labels are ignored); for a synthetic-data run,
    encoded columns {'cat', 'dense', 'scenario'}.
    """
    if isinstance(rows, Mapping) and all(k in rows for k in _ENCODED_KEYS):
      return self.predict_columns(rows)
    if self.prepared_dir is None and self.config.data.name == 'synthetic':
      raise DataError('a run on the synthetic dataset has no raw form: pass encoded columns '
                      "{'cat': (N, F) int32, 'dense': (N, D) float32, 'scenario': (N,) int32}")
    return self.predict_columns(self.encode(rows))


def feature_kinds(encoder) -> dict[str, str]:
  """The raw columns predict reads (every feature and the scenario; not the label)."""
  return {c: k for c, k in encoder.raw_kinds.items() if c != encoder.label_column}


def load_run(workdir: str, checkpoint: str = 'best', prepared_dir: str | None = None) -> Run:
  """The trained run in `workdir` (written by train.py); its checkpoint is restored on first
  prediction. `prepared_dir`: the prepared dataset whose Encoder turns raw rows into columns
  (default: found from config.data.prepared_dir, see `find_prepared_dir`)."""
  if checkpoint not in ('best', 'latest'):
    raise ConfigError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}")
  paths = {name: os.path.join(workdir, name) for name in ('config.json', 'feature_spec.json')}
  for name, path in paths.items():
    if not os.path.isfile(path):
      raise CheckpointError(f'{os.path.abspath(workdir)} is not a training run (no {name}): '
                            'train first (python train.py --config ... --workdir ...)')
  config = ml_collections.ConfigDict(run_config.load(workdir))  # older runs' keys upgraded
  spec = load_spec(paths['feature_spec.json'])
  final = None
  if os.path.isfile(os.path.join(workdir, 'final_metrics.json')):
    with open(os.path.join(workdir, 'final_metrics.json')) as f:
      final = json.load(f)
  if prepared_dir is not None and not os.path.isdir(prepared_dir):
    raise DataError(f'prepared_dir={prepared_dir!r} is not a folder')
  return Run(workdir=workdir, config=config, spec=spec,
             metrics=_read_jsonl(os.path.join(workdir, 'metrics.jsonl')), final_metrics=final,
             checkpoint=checkpoint,
             prepared_dir=prepared_dir or find_prepared_dir(config, workdir))

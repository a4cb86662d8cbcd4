"""Serving export: a trained run as a self-contained folder that scores without the training code.

  midpg-export --workdir runs/aliccp --out export/aliccp   (midpg_jax/commands/export.py; or
                                                           export_run(...) in Python)

  from midpg_jax.export import load_exported
  model = load_exported('export/aliccp')
  probs = model.predict_columns({'cat': ..., 'dense': ..., 'scenario': ...})   # encoded rows
  probs = model.predict('rows.csv')        # raw rows, through the saved Encoder (if the run has one)

The folder:
  model.jaxexport   the predict function serialised with `jax.export` (StableHLO + calling
                    convention): f(variables, cat, dense, scenario, multi) -> probabilities (b,),
                    with the batch dimension `b` symbolic, so one artefact serves any batch size
  variables.npz     the trained parameters (and normalisation statistics), leaf_<i> in the order
                    of the function's first argument; variables.json names them
  spec.json         the feature spec: input columns, their order, sizes and scenarios
  encoder/          the vocabularies, scalers and scenario map of preparation (the Encoder's
                    files), absent for the built-in synthetic dataset (no raw form)
  export.json       version stamp: export format, midpg_jax and jax versions, model, checkpoint
                    step, platforms

Loading imports only jax and numpy (plus pyarrow and the Encoder for raw rows): no flax, optax,
orbax, config or model code. A different jax version loads the artefact as long as it can read
its StableHLO (jax guarantees at least 6 months of backward compatibility).

Bad input and faults (docs/robustness.md):
* writing: the folder is written beside `out_dir` and renamed into place when complete (a full
  disk is one line, `StorageError`, and leaves an earlier export as it was); an existing `out_dir`
  is replaced only when it is an export: never the run, a dataset or a folder of the user's;
* loading: a missing or corrupt file is a CheckpointError naming it;
* `predict_columns` checks its columns against spec.json (`inputs.checked`: shapes, integer ids
  inside their vocabularies, scenarios in [0, S), finite dense values; an empty batch gives an
  empty result); `predict` checks raw rows as a file's (`Encoder.encode_rows`);
* the function itself, called without the loader, scores every row: an id outside its vocabulary
  reads as the out-of-vocabulary id 0 (a multi-valued field's as padding, i.e. dropped), and a row
  with a scenario outside [0, S) or a non-finite dense value gets -1.0 (`UNSCORABLE`), never NaN.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from midpg_jax import inputs
from midpg_jax.errors import CheckpointError, DataError

FORMAT_VERSION = 1
_FUNCTION, _VARIABLES, _SPEC, _STAMP, _ENCODER = ('model.jaxexport', 'variables.npz', 'spec.json',
                                                   'export.json', 'encoder')
_NAMES = 'variables.json'
_WRITTEN = frozenset({_FUNCTION, _VARIABLES, _NAMES, _SPEC, _STAMP, _ENCODER})
UNSCORABLE = -1.0  # the function's output for a row it cannot score (see the module doc)


def _input_specs(spec, batch):
  """ShapeDtypeStructs of (cat, dense, scenario, multi) for a batch of `batch` rows."""
  return (jax.ShapeDtypeStruct((batch, len(spec.cat_names)), jnp.int32),
          jax.ShapeDtypeStruct((batch, spec.num_dense), jnp.float32),
          jax.ShapeDtypeStruct((batch,), jnp.int32),
          tuple(jax.ShapeDtypeStruct((batch, n), jnp.int32) for n in spec.multi_max_lens))


def serving_model(model):
  """`model` with a batch-size-independent scenario routing, for the symbolic batch dimension.

  MI-DPG's 'tiled' path sizes its tiles from the batch size in Python (`tile_rows`), which a
  symbolic dimension cannot give; its 'onehot' path computes the same function with the same
  parameters (S times the FLOPs of the matmuls, no sort), so the export uses it.
  """
  if getattr(model, 'scenario_matmul', None) == 'tiled':
    return model.clone(scenario_matmul='onehot')
  return model


def _check_replaceable(out_dir: str, workdir: str) -> None:
  """An existing `out_dir` may be replaced only when it is an export: its stamp and nothing but
  what an export holds (never the run, a prepared dataset or a folder of the user's)."""
  if not os.path.lexists(out_dir):
    return
  real, run_dir = os.path.realpath(out_dir), os.path.realpath(workdir)
  if run_dir == real or run_dir.startswith(real + os.sep):
    raise DataError(f'{out_dir} holds the run being exported ({workdir}): refusing to replace it;'
                    ' export into a new folder')
  if not os.path.isdir(out_dir):
    raise DataError(f'{out_dir} is a file, not an export folder: export into a new folder')
  entries = sorted(os.listdir(out_dir))
  if entries and (_STAMP not in entries or not _WRITTEN.issuperset(entries)):
    shown = ', '.join(entries[:5]) + (' ...' if len(entries) > 5 else '')
    raise DataError(f'{out_dir} exists and is not a midpg-jax export (it holds {shown}): '
                    'refusing to replace it; export into a new or empty folder')


def export_run(run, out_dir: str, platforms=('cpu',)) -> str:
  """Writes the serving folder of `run` (a `midpg_jax.api.Run` or a workdir) into `out_dir`.

  `platforms`: where the artefact may run ('cpu', 'cuda', 'rocm', 'tpu'); one artefact may hold
  several lowerings, chosen at load time by the device it runs on.
  """
  from midpg_jax import api, files  # the training side; never imported by the loader
  if isinstance(run, (str, os.PathLike)):
    run = api.load_run(os.fspath(run))
  _check_replaceable(out_dir, run.workdir)
  encoder = run.encoder if run.prepared_dir is not None else None  # checks its fingerprint
  spec, state, model = run.spec, run.state, serving_model(run.model)
  variables = {'params': state.params, **state.model_state}
  paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  leaves = [np.asarray(leaf) for _, leaf in paths_leaves]
  cat_sizes = np.asarray(spec.cat_vocab_sizes, np.int32)

  def known(ids, size):  # an id outside [0, size) reads as 0: out of vocabulary, or padding
    return jnp.where((ids >= 0) & (ids < size), ids, 0)

  def predict(leaves, cat, dense, scenario, multi):
    scorable = ((scenario >= 0) & (scenario < spec.num_scenarios)
                & jnp.isfinite(dense).all(axis=1))
    batch = {'cat': known(cat, cat_sizes), 'dense': jnp.where(scorable[:, None], dense, 0.0),
             'scenario': jnp.where(scorable, scenario, 0)}
    if spec.multi_names:
      batch['multi'] = {name: known(ids, size) for name, ids, size in
                        zip(spec.multi_names, multi, spec.multi_vocab_sizes)}
    outputs = model.apply(jax.tree_util.tree_unflatten(treedef, leaves), batch, train=False)
    # (b,), as make_predict_step
    return jnp.where(scorable, jax.nn.sigmoid(outputs['logits']), UNSCORABLE)

  (b,) = jax.export.symbolic_shape('b')
  leaf_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
  exported = jax.export.export(jax.jit(predict), platforms=tuple(platforms))(
      leaf_specs, *_input_specs(spec, b))

  import midpg_jax
  stamp = {'format_version': FORMAT_VERSION, 'midpg_jax_version': midpg_jax.__version__,
           'jax_version': jax.__version__, 'model': run.config.model.name,
           'dataset': run.config.data.name, 'workdir': os.path.abspath(run.workdir),
           'checkpoint': run.checkpoint, 'step': int(state.step),
           'platforms': list(exported.platforms), 'inputs': ['cat', 'dense', 'scenario', 'multi'],
           'unscorable': UNSCORABLE,
           'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'has_encoder': encoder is not None}
  kept = f'{out_dir} is unchanged' if os.path.exists(out_dir) else f'no {out_dir} written'
  with files.storage_errors(f'exporting to {out_dir}', kept=kept), \
      files.staging_dir(out_dir) as tmp:
    with open(os.path.join(tmp, _FUNCTION), 'wb') as f:
      f.write(exported.serialize())
    np.savez(os.path.join(tmp, _VARIABLES), **{f'leaf_{i}': x for i, x in enumerate(leaves)})
    with open(os.path.join(tmp, _NAMES), 'w') as f:
      json.dump([{'name': jax.tree_util.keystr(path), 'shape': list(np.shape(leaf)),
                  'dtype': str(np.asarray(leaf).dtype)} for path, leaf in paths_leaves], f,
                indent=1)
    with open(os.path.join(tmp, _SPEC), 'w') as f:
      f.write(spec.to_json())
    if encoder is not None:
      encoder.save(os.path.join(tmp, _ENCODER))
    with open(os.path.join(tmp, _STAMP), 'w') as f:
      json.dump(stamp, f, indent=1)
    files.replace_dir(tmp, out_dir)  # an earlier export is replaced only once this one is complete
  return out_dir


def _read(directory: str, name: str, read):
  """read(path of `name` in the export); a missing or unreadable file is a CheckpointError."""
  path = os.path.join(directory, name)
  try:
    return read(path)
  except FileNotFoundError:
    raise CheckpointError(f'{path} is missing: {directory} is not a complete export; export the '
                          'run again (midpg-export --workdir <run> --out <folder>)') from None
  except Exception as e:  # a damaged file: zipfile, pickle, struct, flatbuffer or JSON errors
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), '')
    raise CheckpointError(f'{path} is corrupt ({type(e).__name__}: {first[:160]}): export the run '
                          'again (midpg-export --workdir <run> --out <folder>)') from e


def _json(path: str):
  with open(path) as f:
    return json.load(f)


def _function(path: str):
  with open(path, 'rb') as f:
    return jax.export.deserialize(bytearray(f.read()))


def _leaves(path: str) -> list[np.ndarray]:
  with np.load(path) as npz:
    return [npz[f'leaf_{i}'] for i in range(len(npz.files))]


class ExportedModel:
  """A serving folder, loaded: `predict_columns` (encoded rows) and `predict` (raw rows)."""

  def __init__(self, directory: str):
    self.directory = directory
    if not os.path.isfile(os.path.join(directory, _STAMP)):
      raise CheckpointError(f'{directory} is not a midpg-jax export (no {_STAMP}); write one with '
                            'midpg-export --workdir <run> --out <folder>')
    self.stamp = _read(directory, _STAMP, _json)
    if self.stamp['format_version'] > FORMAT_VERSION:
      raise CheckpointError(f'{directory} has export format {self.stamp["format_version"]}, newer '
                            f'than this midpg_jax reads ({FORMAT_VERSION}): upgrade midpg-jax')
    self.spec = _read(directory, _SPEC, _json)  # a plain dict: the loader imports no data code
    self._exported = _read(directory, _FUNCTION, _function)
    leaves = _read(directory, _VARIABLES, _leaves)
    expected = self._exported.in_avals[:len(leaves)]
    got = [(x.shape, x.dtype) for x in leaves]
    if len(leaves) + 3 + len(self.spec['multi_names']) != len(self._exported.in_avals) or got != [
        (a.shape, a.dtype) for a in expected]:
      raise CheckpointError(f'{os.path.join(directory, _VARIABLES)} does not fit '
                            f'{os.path.join(directory, _FUNCTION)} ({len(leaves)} arrays for a '
                            'function of other parameters): the files are from different exports;'
                            ' export the run again')
    self._variables = [jax.device_put(x) for x in leaves]
    self._call = jax.jit(self._exported.call)
    self._encoder = None

  def predict_columns(self, columns) -> np.ndarray:
    """Probabilities (N,) float32 of encoded columns {'cat', 'dense', 'scenario'[, 'multi']},
    checked against spec.json (`inputs.checked`: a DataError names the column, row and value)."""
    cols = inputs.checked(columns, self.spec)
    if len(cols['scenario']) == 0:  # the function's batch dimension is at least 1
      return np.zeros(0, np.float32)
    multi = tuple(cols['multi'][name] for name in self.spec['multi_names'])
    return np.asarray(self._call(self._variables, cols['cat'], cols['dense'], cols['scenario'],
                                 multi))

  def predict(self, rows) -> np.ndarray:
    """Probabilities of raw rows (a dict of columns or a pandas DataFrame) via the saved Encoder,
    each value checked as a file's (`Encoder.encode_rows`)."""
    if self._encoder is None:
      if not self.stamp.get('has_encoder'):
        raise DataError(f'{self.directory} has no encoder (a synthetic-data run): pass encoded '
                        'columns to predict_columns')
      from midpg_jax.data.encode import Encoder
      from midpg_jax.data.schema import check_same_encoding, load_spec
      encoder = Encoder.load(os.path.join(self.directory, _ENCODER))
      check_same_encoding(load_spec(os.path.join(self.directory, _SPEC)), encoder.spec,
                          f'the export {self.directory}', f'its {_ENCODER}/')
      self._encoder = encoder
    return self.predict_columns(self._encoder.encode_rows(rows))


def load_exported(directory: str) -> ExportedModel:
  return ExportedModel(directory)

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
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

FORMAT_VERSION = 1
_FUNCTION, _VARIABLES, _SPEC, _STAMP, _ENCODER = ('model.jaxexport', 'variables.npz', 'spec.json',
                                                   'export.json', 'encoder')


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


def export_run(run, out_dir: str, platforms=('cpu',)) -> str:
  """Writes the serving folder of `run` (a `midpg_jax.api.Run` or a workdir) into `out_dir`.

  `platforms`: where the artefact may run ('cpu', 'cuda', 'rocm', 'tpu'); one artefact may hold
  several lowerings, chosen at load time by the device it runs on.
  """
  from midpg_jax import api  # the training side; never imported by the loader
  if isinstance(run, (str, os.PathLike)):
    run = api.load_run(os.fspath(run))
  spec, state, model = run.spec, run.state, serving_model(run.model)
  variables = {'params': state.params, **state.model_state}
  paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
  leaves = [np.asarray(leaf) for _, leaf in paths_leaves]

  def predict(leaves, cat, dense, scenario, multi):
    batch = {'cat': cat, 'dense': dense, 'scenario': scenario}
    if spec.multi_names:
      batch['multi'] = dict(zip(spec.multi_names, multi))
    outputs = model.apply(jax.tree_util.tree_unflatten(treedef, leaves), batch, train=False)
    return jax.nn.sigmoid(outputs['logits'])  # (b,), as make_predict_step

  (b,) = jax.export.symbolic_shape('b')
  leaf_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
  exported = jax.export.export(jax.jit(predict), platforms=tuple(platforms))(
      leaf_specs, *_input_specs(spec, b))

  tmp = out_dir.rstrip('/') + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with open(os.path.join(tmp, _FUNCTION), 'wb') as f:
    f.write(exported.serialize())
  np.savez(os.path.join(tmp, _VARIABLES), **{f'leaf_{i}': x for i, x in enumerate(leaves)})
  with open(os.path.join(tmp, 'variables.json'), 'w') as f:
    json.dump([{'name': jax.tree_util.keystr(path), 'shape': list(np.shape(leaf)),
                'dtype': str(np.asarray(leaf).dtype)} for path, leaf in paths_leaves], f, indent=1)
  with open(os.path.join(tmp, _SPEC), 'w') as f:
    f.write(spec.to_json())
  if run.prepared_dir is not None:
    run.encoder.save(os.path.join(tmp, _ENCODER))
  import midpg_jax
  stamp = {'format_version': FORMAT_VERSION, 'midpg_jax_version': midpg_jax.__version__,
           'jax_version': jax.__version__, 'model': run.config.model.name,
           'dataset': run.config.data.name, 'workdir': os.path.abspath(run.workdir),
           'checkpoint': run.checkpoint, 'step': int(state.step),
           'platforms': list(exported.platforms), 'inputs': ['cat', 'dense', 'scenario', 'multi'],
           'created': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
           'has_encoder': run.prepared_dir is not None}
  with open(os.path.join(tmp, _STAMP), 'w') as f:
    json.dump(stamp, f, indent=1)
  shutil.rmtree(out_dir, ignore_errors=True)  # replaced only once the new one is complete
  os.rename(tmp, out_dir)
  return out_dir


class ExportedModel:
  """A serving folder, loaded: `predict_columns` (encoded rows) and `predict` (raw rows)."""

  def __init__(self, directory: str):
    self.directory = directory
    stamp_path = os.path.join(directory, _STAMP)
    if not os.path.isfile(stamp_path):
      from midpg_jax.errors import CheckpointError
      raise CheckpointError(f'{directory} is not a midpg-jax export (no {_STAMP}); write one with '
                            'midpg-export --workdir <run> --out <folder>')
    with open(stamp_path) as f:
      self.stamp = json.load(f)
    if self.stamp['format_version'] > FORMAT_VERSION:
      from midpg_jax.errors import CheckpointError
      raise CheckpointError(f'{directory} has export format {self.stamp["format_version"]}, newer '
                            f'than this midpg_jax reads ({FORMAT_VERSION}): upgrade midpg-jax')
    with open(os.path.join(directory, _SPEC)) as f:
      self.spec = json.load(f)  # a plain dict: the loader does not import the data code
    with open(os.path.join(directory, _FUNCTION), 'rb') as f:
      self._exported = jax.export.deserialize(bytearray(f.read()))
    with np.load(os.path.join(directory, _VARIABLES)) as npz:
      leaves = [npz[f'leaf_{i}'] for i in range(len(npz.files))]
    self._variables = [jax.device_put(x) for x in leaves]
    self._call = jax.jit(self._exported.call)
    self._encoder = None

  def predict_columns(self, columns) -> np.ndarray:
    """Probabilities (N,) float32 of encoded columns {'cat', 'dense', 'scenario'[, 'multi']}."""
    multi = tuple(np.asarray(columns['multi'][name], np.int32)
                  for name in self.spec['multi_names'])
    out = self._call(self._variables, np.asarray(columns['cat'], np.int32),
                     np.asarray(columns['dense'], np.float32),
                     np.asarray(columns['scenario'], np.int32), multi)
    return np.asarray(out)

  def predict(self, rows) -> np.ndarray:
    """Probabilities of raw rows (a dict of columns or a pandas DataFrame) via the saved Encoder."""
    if self._encoder is None:
      if not self.stamp.get('has_encoder'):
        from midpg_jax.errors import DataError
        raise DataError(f'{self.directory} has no encoder (a synthetic-data run): pass encoded '
                        'columns to predict_columns')
      from midpg_jax.data.encode import Encoder
      self._encoder = Encoder.load(os.path.join(self.directory, _ENCODER))
    if hasattr(rows, 'columns') and hasattr(rows, 'to_numpy'):
      rows = {str(c): rows[c].to_numpy() for c in rows.columns}
    return self.predict_columns(self._encoder.encode(rows, with_label=False))


def load_exported(directory: str) -> ExportedModel:
  return ExportedModel(directory)

"""The run's own config: `<workdir>/config.json`, written when a run starts.

Resuming a run and evaluating it use that config, so a run is always continued and scored with
the model and data it was trained with:

  - `check_resumable(saved, config)`: the trainer refuses to resume a workdir with a config that
    differs in a key that changes what the run computes, naming the keys (one line).
  - `resolve(workdir, config, overrides)`: for the command-line tools. Starts from the saved config
    and applies the command-line `--config.<key>=<value>` overrides: one of `HARMLESS_KEYS` is
    applied; any other that differs from the run's value is an error. Keys where only the config
    *file* differs are taken from the run and named in one printed line.

HARMLESS_KEYS cannot change the trained weights or the metrics: how the run is shown
(progress_bar, log_every_steps), how evaluation is batched (eval_batch_size: padding rows have
weight 0), input prefetching, the device mesh (checkpoints restore onto any mesh; results agree to
float32 rounding), and when to stop (num_epochs extends or shortens a run; early_stop_patience).
num_epochs is not harmless with the cosine schedule, whose length it sets.

A run saved before the per-model config blocks (flat `model.rank`, `model.apg_rank`, ...) is read
with those keys moved to its model's block (`upgrade`); `moved_key_message` names the new place
of an old key given on a command line or in a compare variant.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections

from midpg_jax import files
from midpg_jax.errors import ConfigError

FILENAME = 'config.json'
HARMLESS_KEYS = frozenset({
    'train.progress_bar', 'train.log_every_steps', 'train.eval_batch_size', 'train.prefetch',
    'train.num_epochs', 'train.early_stop_patience', 'mesh.shape', 'mesh.param_rules'})


# config.model's flat keys before the per-model blocks -> their places `<model>.<key>` now.
MOVED_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    **{key: (f'midpg.{key}',) for key in (
        'rank', 'specific_rank', 'generator_hidden', 'generator_features', 'use_shared',
        'use_specific', 'combine', 'mi_estimator', 'mi_weight', 'mi_temperature', 'mi_dim')},
    'num_experts': tuple(f'{m}.num_experts' for m in ('mmoe', 'ple', 'hmoe', 'sar_net', 'm2m')),
    'specific_experts': ('ple.specific_experts', 'sar_net.specific_experts'),
    'pn_momentum': ('star.pn_momentum', 'hamur.pn_momentum'),
    'pepnet_prior_fields': ('pepnet.prior_fields', 'ppnet.prior_fields'),
    **{f'{model}_{key}': (f'{model}.{key}',) for model, keys in (
        ('star', ('aux_hidden',)), ('m2m', ('attention_dim', 'meta_layers')),
        ('adasparse', ('form', 'beta', 'epsilon', 'alpha', 'alpha_step', 'sparsity_weight',
                       'sparsity_range')),
        ('apg', ('condition', 'rank', 'overparam', 'generate_bias', 'generator_hidden')),
        ('hamur', ('adapters', 'adapter_dim', 'rank', 'hyper_hidden'))) for key in keys},
}


def moved_key_message(key: str) -> str | None:
  """For an old flat key ('model.rank'): where it is now, in words; None for any other key."""
  prefix, _, leaf = key.partition('.')
  if prefix != 'model' or leaf not in MOVED_MODEL_KEYS:
    return None
  places = ', '.join(f'model.{p}' for p in MOVED_MODEL_KEYS[leaf])
  many = len(MOVED_MODEL_KEYS[leaf]) > 1
  return f'{key} is now {"per model: " if many else ""}{places} (per-model config blocks)'


def upgrade(saved: dict) -> dict:
  """A saved config (JSON dict) with the flat model keys of older runs moved to the block of the
  run's model (the other models' values of those keys are dropped: the run never used them)."""
  model = saved.get('model')
  if not isinstance(model, dict):
    return saved
  for old in [k for k in model if k in MOVED_MODEL_KEYS]:
    value = model.pop(old)
    for place in MOVED_MODEL_KEYS[old]:
      block, key = place.split('.')
      if block == model.get('name'):
        model.setdefault(block, {})[key] = value
  return saved


def path(workdir: str) -> str:
  return os.path.join(workdir, FILENAME)


def save(workdir: str, config) -> None:
  """Written to a temporary name and renamed: a full disk or a kill keeps the previous one."""
  files.write_text(path(workdir), config.to_json_best_effort(indent=1))


def load(workdir: str) -> dict[str, Any] | None:
  """The saved config as a nested dict (`upgrade`d), or None without one."""
  try:
    with open(path(workdir)) as f:
      return upgrade(json.load(f))
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path(workdir)} is unreadable ({e}); restore it or use another '
                      '--workdir') from e


def load_flat(workdir: str) -> dict[str, Any] | None:
  """The saved config as {'model.midpg.rank': 8, ...} (lists as tuples), or None without one."""
  saved = load(workdir)
  return None if saved is None else flatten(saved)


def _frozen(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


def flatten(config: Mapping | ml_collections.ConfigDict, prefix: str = '') -> dict[str, Any]:
  items = config.items() if not isinstance(config, ml_collections.ConfigDict) else \
      config.to_dict().items()
  out = {}
  for key, value in items:
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      out.update(flatten(value, name + '.'))
    else:
      out[name] = _frozen(value)
  return out


def _harmless(key: str, flat: Mapping[str, Any]) -> bool:
  if key == 'train.num_epochs' and flat.get('train.schedule') == 'cosine':
    return False  # sets the length of the cosine schedule
  return key in HARMLESS_KEYS


def differences(saved: Mapping[str, Any], config) -> dict[str, tuple[Any, Any]]:
  """{key: (saved value, config value)} for every key that differs (a key missing on one side
  counts as differing only when present in the saved config and in the config)."""
  now = flatten(config)
  return {k: (saved[k], now[k]) for k in sorted(saved.keys() & now.keys()) if saved[k] != now[k]}


def _describe(diff: Mapping[str, tuple[Any, Any]], limit: int = 6) -> str:
  items = [f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items()]
  more = f' and {len(items) - limit} more' if len(items) > limit else ''
  return ', '.join(items[:limit]) + more


def check_resumable(workdir: str, config) -> None:
  """Raises ConfigError when `config` would change what the run in `workdir` computes."""
  saved = load_flat(workdir)
  if saved is None:
    return
  changed = {k: v for k, v in differences(saved, config).items()
             if not _harmless(k, flatten(config))}
  if changed:
    raise ConfigError(f'{workdir} holds a run trained with another config ({_describe(changed)});'
                      f' resume it with its own config ({path(workdir)}) or use another --workdir')


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  *parents, leaf = key.split('.')
  node = config
  for p in parents:
    node = node[p]
  old = node[leaf]
  if isinstance(old, tuple) and isinstance(value, tuple):
    value = _frozen(value)
  elif isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  node[leaf] = value


def resolve(workdir: str, config, overrides: Mapping[str, Any] = (),
            harmless=_harmless) -> tuple[Any, str | None]:
  """(the config to use for the run in `workdir`, a note to print or None).

  `config` is what the command line built (config file + overrides); `overrides` the keys set
  with --config.<key>=<value>. Without a saved config, `config` is used as it is.
  """
  saved = load_flat(workdir)
  if saved is None:
    return config, None
  overrides = dict(overrides)
  diff = differences(saved, config)
  refused = {k: v for k, v in diff.items() if k in overrides and not harmless(k, saved)}
  if refused:
    items = ', '.join(f'--config.{k}={b!r} (the run has {a!r})' for k, (a, b) in refused.items())
    raise ConfigError(f'{items}: {workdir} was trained with another value; drop the override '
                      f'or use another --workdir')
  from_run = {k: v for k, v in diff.items() if k not in overrides}
  resolved = ml_collections.ConfigDict(config.to_dict())
  for key, (value, _) in from_run.items():
    _set(resolved, key, value)
  note = None
  if from_run:
    note = (f'using the run\'s own config ({path(workdir)}) where the config file differs: '
            f'{_describe({k: (b, a) for k, (a, b) in from_run.items()}, limit=50)}')
  return resolved, note

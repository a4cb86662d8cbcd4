"""A run's own config, resuming without duplicates, and a best checkpoint whatever the validation
split holds (issue 11)."""

import json
import os

import numpy as np
import pytest

from conftest import tiny_config
from midpg_jax import evaluation, run_config, trainer
from midpg_jax.data import register_dataset, synthetic
from midpg_jax.errors import ConfigError, UserError, USER_ERRORS

pytestmark = pytest.mark.slow  # each test trains a run or starts processes


def rows(workdir) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@register_dataset('synthetic_no_validation_positives')
def _no_validation_positives(cfg):
  spec, splits = synthetic.generate(cfg)
  splits['validation'] = dict(splits['validation'], label=np.zeros_like(
      splits['validation']['label']))
  return spec, splits


def test_validation_without_positives_still_keeps_a_best_checkpoint(tmp_path):
  c = tiny_config()
  c.data.name = 'synthetic_no_validation_positives'
  summary = trainer.train_and_evaluate(c, str(tmp_path))  # failed: "no best checkpoint"
  assert np.isnan(summary['validation']['overall']['auc'])
  # Ranked by logloss: the best step is the one with the lowest validation logloss.
  losses = {r['step']: r['overall/logloss'] for r in rows(tmp_path) if r['split'] == 'validation'}
  assert summary['best_step'] == min(losses, key=losses.get)
  assert np.isfinite(summary['test']['overall']['auc'])


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path):
  c = tiny_config()
  assert trainer.train_and_evaluate(c, str(tmp_path), stop_after_steps=5) == {'interrupted_at': 5}
  changed = tiny_config()
  changed.model.midpg.rank = 8
  changed.train.learning_rate = 0.01
  with pytest.raises(ConfigError, match=r'model\.midpg\.rank: 4 -> 8, train\.learning_rate'):
    trainer.train_and_evaluate(changed, str(tmp_path))
  # What cannot change the result may differ: the run goes on (here to its end).
  harmless = tiny_config()
  harmless.train.log_every_steps = 1
  harmless.train.eval_batch_size = 333
  harmless.train.prefetch = 0
  assert trainer.train_and_evaluate(harmless, str(tmp_path))['steps'] == 16


def test_num_epochs_may_extend_a_constant_schedule_but_not_a_cosine_one(tmp_path):
  c = tiny_config()
  c.train.schedule = 'cosine'
  run_config.save(str(tmp_path), c)
  c.train.num_epochs = 2
  with pytest.raises(ConfigError, match='num_epochs'):
    run_config.check_resumable(str(tmp_path), c)
  c.train.schedule = 'constant'
  run_config.save(str(tmp_path), c)
  c.train.num_epochs = 3
  run_config.check_resumable(str(tmp_path), c)


def test_eval_uses_the_runs_own_config_and_reports_the_restored_step(tmp_path):
  trained = tiny_config()
  trained.model.midpg.rank = 8  # the README example: train with an override ...
  assert trainer.train_and_evaluate(trained, str(tmp_path), stop_after_steps=10) == {
      'interrupted_at': 10}
  # ... then evaluate without it: the run's config.json supplies rank=8.
  config, note = run_config.resolve(str(tmp_path), tiny_config(), overrides={})
  assert config.model.midpg.rank == 8 and 'model.midpg.rank: 4 -> 8' in note
  assert config.model.hidden == (16,)  # tuples stay tuples
  result, _, _, meta = evaluation.evaluate_checkpoint(config, str(tmp_path), 'test', 'latest')
  assert meta['checkpoint_step'] == 10  # eval.py printed the best step (5) here
  assert np.isfinite(result['overall']['auc'])
  # An override that changes the model is refused; one that cannot is applied.
  with pytest.raises(ConfigError, match=r'--config\.model\.midpg\.rank=4 \(the run has 8\)'):
    run_config.resolve(str(tmp_path), tiny_config(), overrides={'model.midpg.rank': 4})
  smaller = tiny_config()
  smaller.train.eval_batch_size = 100
  config, _ = run_config.resolve(str(tmp_path), smaller, overrides={'train.eval_batch_size': 100})
  assert config.train.eval_batch_size == 100 and config.model.midpg.rank == 8


def test_resuming_writes_no_duplicate_metrics_rows(tmp_path):
  c = tiny_config()
  trainer.train_and_evaluate(c, str(tmp_path), stop_after_steps=7)  # checkpoint at 5
  with open(tmp_path / 'metrics.jsonl', 'a') as f:  # as if cut after a row, before its checkpoint
    f.write(json.dumps({'step': 10, 'split': 'validation'}) + '\n{"step": 1')
  trainer.train_and_evaluate(c, str(tmp_path))
  trainer.train_and_evaluate(c, str(tmp_path))  # a finished run re-reports
  splits = [(r['step'], r['split']) for r in rows(tmp_path)]
  assert splits[:-2] == [(5, 'validation'), (10, 'validation'), (15, 'validation'),
                         (16, 'validation')]
  assert [s for _, s in splits[-2:]] == ['best/validation', 'best/test']
  assert all('overall/auc' in r for r in rows(tmp_path))


def test_only_our_error_family_is_a_user_error():
  assert USER_ERRORS == (UserError,)
  with pytest.raises(ConfigError, match='train.log_every_steps must be positive'):
    c = tiny_config()
    c.train.log_every_steps = 0
    trainer.validate_config(c)


def _event_tags(folder) -> set:
  """Scalar tags in the TFRecord event files under `folder`."""
  import struct
  from tensorboardX.proto import event_pb2
  tags = set()
  for name in os.listdir(folder):
    with open(os.path.join(folder, name), 'rb') as f:
      data = f.read()
    i = 0
    while i < len(data):
      (length,) = struct.unpack('<Q', data[i:i + 8])
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      tags |= {v.tag for v in event.summary.value}
      i += 12 + length + 4
  return tags


def test_training_writes_tensorboard_events(tmp_path):
  pytest.importorskip('tensorboardX')
  c = tiny_config()
  trainer.train_and_evaluate(c, str(tmp_path))
  tags = _event_tags(tmp_path / 'tensorboard')
  assert {'train/loss', 'train/mi_bound', 'train/examples_per_s', 'validation/overall/auc',
          'validation/overall/logloss', 'validation/scenario_0/calibration',
          'best/test/overall/auc'} <= tags, sorted(tags)


def test_evaluation_does_not_import_the_trainer():
  """The trainer imports evaluation; what both need (setup) lives in build.py, so evaluation
  (eval.py, load_run) never imports the trainer, not even lazily inside a function (issue 12)."""
  import ast
  tree = ast.parse(open(evaluation.__file__).read())
  imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
  imported |= {f'midpg_jax.{a.name}' for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module == 'midpg_jax'
               for a in node.names}
  imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
  assert 'midpg_jax.build' in imported and 'midpg_jax.trainer' not in imported

"""End-to-end training: learns, resumes exactly, fails clearly."""

import json
import os
import shutil

import numpy as np
import pytest

from midpg_jax import evaluation, run_config, trainer
from midpg_jax.checkpoint import Checkpointer, CheckpointError
from midpg_jax.errors import NonFiniteLossError
from conftest import small_config, tiny_config


@pytest.fixture(scope='module')
def learnt(tmp_path_factory):
  """MI-DPG and a scenario-blind logistic regression trained the same way."""
  runs = {}
  for name in ('midpg', 'logistic'):
    c = small_config()
    c.model.name = name
    c.train.num_epochs = 4
    # Each at a learning rate that suits it (a sweep on this data): a fair baseline.
    c.train.learning_rate = 3e-3 if name == 'midpg' else 1e-2
    runs[name] = trainer.train_and_evaluate(c, str(tmp_path_factory.mktemp(name)))
  return runs


@pytest.mark.slow
def test_midpg_beats_scenario_blind_logistic_and_approaches_oracle(learnt):
  m, lr = learnt['midpg']['test']['overall'], learnt['logistic']['test']['overall']
  print('midpg', m, '\nlogistic', lr)
  assert m['auc'] > lr['auc'] + 0.01, (m['auc'], lr['auc'])
  assert m['auc_gap'] < 0.12, m  # oracle AUC minus model AUC
  assert m['logloss'] < lr['logloss']
  assert 0.7 < m['calibration'] < 1.3


@pytest.fixture(scope='module')
def one_epoch_run(tmp_path_factory):
  """(config, workdir, summary) of one epoch of the tiny config (its train and predict steps are
  those of tests/test_runs.py: compilation cache hits), trained once for the tests that inspect a
  finished run. Tests that change a run work on a copy (`copy_of`)."""
  c = tiny_config()
  c.train.eval_every_steps = 0  # one evaluation, at the end of the epoch
  workdir = tmp_path_factory.mktemp('one_epoch')
  return c, workdir, trainer.train_and_evaluate(c, str(workdir))


def copy_of(run_dir, tmp_path):
  shutil.copytree(run_dir, tmp_path / 'run')
  return tmp_path / 'run'


def test_training_writes_metrics_jsonl_and_final_json(one_epoch_run):
  _, workdir, summary = one_epoch_run
  lines = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  assert [l['split'] for l in lines] == ['validation', 'best/validation', 'best/test']
  assert 'scenario_3/auc' in lines[0] and 'overall/oracle_auc' in lines[0]
  assert 'train/loss' in lines[0] and 'train/mi_bound' in lines[0]
  final = json.load(open(workdir / 'final_metrics.json'))
  assert final['test']['overall']['auc'] == pytest.approx(summary['test']['overall']['auc'])


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
  c = tiny_config()
  c.train.num_epochs = 2  # 2 x 16 steps, evaluated (and checkpointed) every 5
  full = trainer.train_and_evaluate(c, str(tmp_path / 'full'))
  # Interrupted in the second epoch, mid-way between evaluations: the steps after the last
  # checkpoint (20) are redone, from inside the epoch.
  out = trainer.train_and_evaluate(c, str(tmp_path / 'cut'), stop_after_steps=23)
  assert out == {'interrupted_at': 23}
  resumed = trainer.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert resumed['best_step'] == full['best_step']
  for split in ('validation', 'test'):
    for group, d in full[split].items():
      for k, v in d.items():
        np.testing.assert_allclose(resumed[split][group][k], v, rtol=1e-6, err_msg=f'{group}/{k}')


def test_eval_restores_best_checkpoint_and_reports_same_metrics(one_epoch_run):
  c, workdir, summary = one_epoch_run
  result, probs, _, meta = evaluation.evaluate_checkpoint(c, str(workdir), 'test')
  assert meta['best_step'] == summary['best_step']
  assert result['overall']['auc'] == pytest.approx(summary['test']['overall']['auc'], rel=1e-6)
  assert len(probs) == c.data.num_test


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(CheckpointError, match='no best checkpoint'):
    evaluation.evaluate_checkpoint(small_config(), str(tmp_path / 'nothing'), 'test')


def test_a_run_of_the_older_layout_restores_but_does_not_train_on(tmp_path):
  """Runs written with a manager per kind (checkpoints/best/<step>, checkpoints/latest/<step>)
  still evaluate; saving into one is refused instead of mixing the layouts."""
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  state = {'w': jnp.arange(3.0)}
  for kind, step in (('best', 3), ('latest', 5)):
    with ocp.CheckpointManager(tmp_path / 'checkpoints' / kind) as manager:
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave({'kind': kind})))
  old = Checkpointer(str(tmp_path), create=False)
  assert (old.latest_step('best'), old.latest_step('latest')) == (3, 5)
  restored, meta = old.restore('best', state)
  assert meta == {'kind': 'best'} and restored['w'].tolist() == [0.0, 1.0, 2.0]
  with pytest.raises(CheckpointError, match='older layout'):
    old.save('latest', 6, state, {})
  old.close()


def test_corrupt_checkpoint_is_a_clear_error(one_epoch_run, tmp_path):
  c, trained, _ = one_epoch_run
  workdir = copy_of(trained, tmp_path)
  best = Checkpointer(str(workdir), create=False).latest_step('best')
  for root, _, files in os.walk(workdir / 'checkpoints' / str(best)):
    for f in files:
      if 'state' in root:
        with open(os.path.join(root, f), 'wb') as fh:
          fh.write(b'garbage')
  with pytest.raises(CheckpointError, match='corrupt'):
    evaluation.evaluate_checkpoint(c, str(workdir), 'test')


@pytest.mark.parametrize('key,value', [('batch_size', 0), ('num_epochs', -1),
                                       ('learning_rate', 0.0), ('optimizer', 'lbfgs')])
def test_bad_train_config_is_a_clear_error_and_writes_nothing(tmp_path, key, value):
  c = small_config()
  c.train[key] = value
  with pytest.raises(ValueError, match=key.split('_')[0]):
    trainer.train_and_evaluate(c, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(one_epoch_run, tmp_path):
  trained_config, trained, _ = one_epoch_run
  c = trained_config.copy_and_resolve_references()
  workdir = copy_of(trained, tmp_path)
  good = sorted(os.listdir(workdir / 'checkpoints'))
  c.train.num_epochs = 2
  c.train.learning_rate = 1e30  # diverges at once in the second epoch
  # A resumed run keeps its config: changing the learning rate is the user's explicit choice here,
  # written into the run's config.json (a --config override would be refused).
  run_config.save(str(workdir), c)
  with pytest.raises(NonFiniteLossError, match='non-finite'):
    trainer.train_and_evaluate(c, str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == good
  c.train.learning_rate = 1e-3
  result, *_ = evaluation.evaluate_checkpoint(c, str(workdir), 'test', kind='latest')
  assert np.isfinite(result['overall']['auc'])


@pytest.mark.slow
def test_row_sparse_embeddings_with_donated_state_train_and_resume_exactly(tmp_path):
  """The sparse path donates the state to the step (even on CPU): checkpoints, evaluation and
  resuming must still see valid buffers and give the uninterrupted result."""
  # 16 steps, evaluated (and checkpointed) every 5; the first table has sparse_optim.MIN_ROWS
  # rows or more, so it takes the row-sparse update (the small config's 2,000 rows did not).
  c = tiny_config(vocab_sizes=(5_000, 500, 200, 100, 50, 20, 10, 5))
  c.train.sparse_embeddings = True
  full = trainer.train_and_evaluate(c, str(tmp_path / 'full'))
  # Cut between two checkpoints: steps 6-7 are redone from the one at step 5.
  assert trainer.train_and_evaluate(c, str(tmp_path / 'cut'), stop_after_steps=7) == {
      'interrupted_at': 7}
  resumed = trainer.train_and_evaluate(c, str(tmp_path / 'cut'))
  assert full['test']['overall']['auc'] > 0.5  # learns (one short epoch)
  np.testing.assert_allclose(resumed['test']['overall']['auc'], full['test']['overall']['auc'],
                             rtol=1e-6)

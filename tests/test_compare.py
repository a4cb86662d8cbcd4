"""The comparison command: tuning on validation, seeds, bootstrap, sweep and curve reuse, resume
keyed on the run's config, early errors, tables and plots."""

import csv
import json
import os

import numpy as np
import pytest

from midpg_jax import compare, metrics
from midpg_jax.compare import plan, report
from midpg_jax.errors import ConfigError
from conftest import config_file, small_config


def tiny_compare(tmp_path, **kw):
  from midpg_jax.compare import config
  b = config.synthetic()
  base = small_config(num_train=6_000, num_val=3_000, num_test=3_000)
  base.train.num_epochs = 1
  base.train.eval_every_steps = 0
  b.base = base
  # The cheapest models to compile: this tests the comparison's bookkeeping, not the models.
  b.models = ('logistic', 'shared_bottom')
  b.grid.learning_rate = (1e-3, 1e-2)
  b.grid.weight_decay = (0.0,)
  b.seeds = (0, 1)
  b.bootstrap.reference = 'shared_bottom'
  b.bootstrap.samples = 40
  b.heterogeneity_sweep = (0.0, 1.0)
  b.sweep_models = ('logistic',)
  b.learning_curve.sizes = (2_048, 4_096)
  b.learning_curve.models = ('logistic',)
  b.output_dir = str(tmp_path)
  b.compilation_cache_dir = ''  # JAX's config is process-wide: the other tests compile as usual
  for k, v in kw.items():
    b[k] = v
  return b


def _csv(path):
  return list(csv.DictReader(open(path)))


@pytest.mark.slow
def test_compare_end_to_end(tmp_path, capsys):
  b = tiny_compare(tmp_path)
  result = compare.run(b)
  # 2 models x 2 grid points (seed 0), + seed 1 at the chosen point, + the sweep at h = 0 (h = 1
  # is the main run), + 2 curve sizes: the chosen grid point is reused as seed 0.
  assert result['trained'] == 2 * 2 + 2 + 1 + 2
  rows = _csv(tmp_path / 'results.csv')
  assert [(r['model'], r['seed']) for r in rows] == [
      ('logistic', '0'), ('logistic', '1'), ('shared_bottom', '0'), ('shared_bottom', '1')]
  tuning = _csv(tmp_path / 'tuning.csv')
  for model in ('logistic', 'shared_bottom'):
    grid = [r for r in tuning if r['model'] == model]
    best = max(grid, key=lambda r: float(r['val/auc']))  # chosen on validation
    assert result['chosen'][model] == (float(best['learning_rate']), 0.0)
    assert {r['fingerprint'] for r in rows if r['model'] == model and r['seed'] == '0'} == {
        best['fingerprint']}
  from midpg_jax.data import load_dataset
  test = load_dataset(b.base.data).splits['test']
  for r in rows:
    assert int(r['params']) > 0 and float(r['train_examples_per_s']) > 0
    # The saved predictions give the recorded AUC exactly (float32 binary, no rounding), and the
    # oracle's is the AUC of the data's true probabilities.
    probs = np.load(os.path.join(r['workdir'], 'test_predictions.npy'))
    assert metrics.auc(test['label'], probs) == float(r['overall/auc'])
    assert float(r['overall/oracle_auc']) == pytest.approx(metrics.auc(test['label'],
                                                                       test['prob']))
  assert rows[0]['overall/auc'] != rows[1]['overall/auc']  # the seeds differ
  sweep = _csv(tmp_path / 'heterogeneity.csv')
  main_fp = next(r['fingerprint'] for r in rows if r['model'] == 'logistic' and r['seed'] == '0')
  assert [float(r['heterogeneity']) for r in sweep] == [0.0, 1.0]
  assert sweep[1]['fingerprint'] == main_fp  # reused, not retrained
  curve = _csv(tmp_path / 'learning_curve.csv')
  assert [int(r['train_rows']) for r in curve] == [2_048, 4_096]
  assert all(float(r['wall_s']) > 0 for r in curve)
  boot = _csv(tmp_path / 'bootstrap.csv')
  assert [r['model'] for r in boot] == ['logistic']
  assert float(boot[0]['low']) <= float(boot[0]['delta']) <= float(boot[0]['high'])
  md = (tmp_path / 'results.md').read_text()
  for part in ('± ', '**', '| shared_bottom |', 'Oracle test AUC', 'h=0.0', 'paired bootstrap',
               '2,048 rows', '## Tuning'):
    assert part in md
  for png in ('scenario_auc.png', 'heterogeneity.png', 'learning_curve.png'):
    assert (tmp_path / png).stat().st_size > 10_000
  # The trainer's sharding table goes to each run's train.log, not once per run on the console.
  out = capsys.readouterr().out
  assert 'features/embed_c0' not in out
  assert 'features/embed_c0' in open(os.path.join(rows[0]['workdir'], 'train.log')).read()

  # Resuming trains nothing new and gives the same tables.
  again = compare.run(b)
  assert again['trained'] == 0 and again['markdown'] == result['markdown']


def test_changed_config_is_trained_again_not_read_back(tmp_path):
  b = tiny_compare(tmp_path, models=('logistic',), seeds=(0,), grid=None, bootstrap=None,
                   heterogeneity_sweep=(), learning_curve=None)
  first = compare.run(b)
  assert first['trained'] == 1
  b.base.train.learning_rate = 3e-3  # same (model, seed), another config
  second = compare.run(b)
  assert second['trained'] == 1
  rows = _csv(tmp_path / 'results.csv')
  assert [float(r['learning_rate']) for r in rows] == [3e-3]
  assert len(_csv(tmp_path / 'runs.csv')) == 2
  assert second['markdown'] != first['markdown']


def test_two_processes_sharing_a_store_keep_each_others_rows(tmp_path):
  path = str(tmp_path / 'runs.csv')
  first, second = plan.RunStore(path), plan.RunStore(path)  # both opened before either writes
  first.add({'fingerprint': 'a', 'model': 'mlp', 'val/auc': 0.7})
  second.add({'fingerprint': 'b', 'model': 'star', 'val/auc': 0.8})
  first.add({'fingerprint': 'c', 'model': 'mlp', 'val/auc': 0.75})
  assert sorted(plan.RunStore(path).rows) == ['a', 'b', 'c']
  assert sorted(first.rows) == ['a', 'b', 'c']  # a write also reads what the other added


def test_data_is_loaded_once_per_comparison(tmp_path, monkeypatch):
  # The trainer and the test scoring of every run each ask for the dataset: without the memo
  # this comparison generates it 1 + 2 runs x 2 times.
  from midpg_jax import build
  calls = []
  load = build.load_dataset
  counting = lambda cfg: calls.append(1) or load(cfg)
  monkeypatch.setattr(build, 'load_dataset', counting)
  b = tiny_compare(tmp_path, models=('logistic',), seeds=(0, 1), grid=None, bootstrap=None,
                   heterogeneity_sweep=(), learning_curve=None)
  assert compare.run(b)['trained'] == 2
  assert len(calls) == 1
  assert build.load_dataset is counting  # the memo is undone after the comparison


def test_rows_carry_the_diagnostics_of_the_best_evaluation(tmp_path):
  log = [{'step': 10, 'split': 'validation', 'train/diversity_l0': 0.1, 'train/mi_bound': 1.0},
         {'step': 20, 'split': 'validation', 'train/diversity_l0': 0.3, 'train/mi_bound': 1.2,
          'train/loss': 0.5, 'overall/auc': 0.7},
         {'step': 20, 'split': 'best/test', 'train/diversity_l0': 9.0}]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write('\n'.join(json.dumps(r) for r in log) + '\n')
  assert compare._diagnostics_at(str(tmp_path), 20) == {'train/diversity_l0': 0.3,
                                                        'train/mi_bound': 1.2}
  rows = [{'model': 'midpg', 'train/diversity_l0': '0.3'}, {'model': 'mmoe', 'train/loss': ''}]
  assert compare._diag_keys(rows) == ['train/diversity_l0']


def test_curve_sizes_share_validation_and_test_rows(tmp_path):
  """Every size is the first rows of one generated dataset (the largest size's), also beyond the
  base config's training rows."""
  from midpg_jax.data import load_dataset
  b = tiny_compare(tmp_path)
  data = [load_dataset(plan.variant_config(b, 'logistic', {'model.name': 'logistic'}, 0,
                                           train_rows=n, source_rows=8_192).data)
          for n in (2_048, 8_192)]
  assert [len(d.splits['train']['label']) for d in data] == [2_048, 8_192]
  for split in ('validation', 'test'):
    np.testing.assert_array_equal(data[0].splits[split]['prob'], data[1].splits[split]['prob'])
  np.testing.assert_array_equal(data[0].splits['train']['cat'], data[1].splits['train']['cat'][:2_048])


def test_misspelled_model_fails_before_any_training(tmp_path):
  b = tiny_compare(tmp_path / 'out', models=('logistic', 'shared_botom'))
  with pytest.raises(ConfigError, match="shared_botom"):
    compare.run(b)
  assert not (tmp_path / 'out').exists()  # nothing trained, nothing written


def test_unknown_variant_key_is_a_clear_error(tmp_path):
  b = tiny_compare(tmp_path)
  with pytest.raises(ConfigError, match='unknown config key'):
    plan.variant_config(b, 'bad', {'model.no_such_key': 1}, 0)


def test_fingerprint_ignores_display_keys_and_other_models_blocks_only():
  c = small_config()
  fp = plan.fingerprint(c)
  c.train.progress_bar = not c.train.progress_bar
  c.model.star.aux_hidden = (8,)  # the block of a model this (midpg) run never builds
  assert plan.fingerprint(c) == fp
  c.model.midpg.rank = 8
  assert plan.fingerprint(c) != fp
  c = small_config()
  c.train.learning_rate *= 2
  assert plan.fingerprint(c) != fp


def test_one_seed_table_has_no_spread():
  rows = [{'model': 'a', 'overall/auc': '0.75'}, {'model': 'b', 'overall/auc': '0.76'},
          {'model': 'b', 'overall/auc': '0.78'}]
  md = report.markdown_table(report.summarise(rows[:1], ['overall/auc']), ['overall/auc'], 't')
  assert '0.7500' in md and '±' not in md and 'one seed' in md
  md = report.markdown_table(report.summarise(rows[1:], ['overall/auc']), ['overall/auc'], 't')
  assert '0.7700 ± 0.0141' in md


def test_weighted_auc_matches_exact_auc_with_ties():
  rng = np.random.default_rng(0)
  labels = (rng.random(500) < 0.3).astype(np.float32)
  scores = np.round(rng.random(500) + labels * 0.3, 1)  # many ties
  counts = np.stack([np.ones(500), np.bincount(rng.integers(0, 500, 500), minlength=500)])
  got = report.weighted_aucs(labels, scores, counts)
  assert got[0] == pytest.approx(metrics.auc(labels, scores), abs=1e-12)
  repeated = np.repeat(np.arange(500), counts[1].astype(int))
  assert got[1] == pytest.approx(metrics.auc(labels[repeated], scores[repeated]), abs=1e-12)
  same = report.paired_bootstrap(labels, [scores], {'copy': [scores.copy()]}, samples=20)
  assert same['copy'] == {'delta': 0.0, 'low': 0.0, 'high': 0.0, 'p_better': 0.0}


def _summary(models):
  rows = [{'model': m, 'seed': 0, **{f'{g}/auc': 0.7 + 0.01 * i for g in ('s0', 'overall')},
           'overall/oracle_auc': 0.8, 's0/oracle_auc': 0.8} for i, m in enumerate(models)]
  cols = ['s0/auc', 'overall/auc', 's0/oracle_auc', 'overall/oracle_auc']
  return report.summarise(rows, cols)


def test_each_model_has_one_colour_in_every_plot():
  names = ['shared_bottom', 'mmoe', 'star', 'midpg']
  colors = report.model_colors(names)
  bars = report.scenario_figure(_summary(names), ['s0'], colors)
  bar_color = {c.get_label(): c.patches[0].get_facecolor() for c in bars.axes[0].containers
               if hasattr(c, 'patches')}
  sweep = [{'model': m, 'h': h, 'gap': 0.1} for m in ('star', 'midpg') for h in (0.0, 1.0)]
  lines = report.line_figure(sweep, 'h', 'gap', colors, 'h', 'gap', 't')
  line_color = {c.get_label(): c.lines[0].get_color() for c in lines.axes[0].containers}
  for m in ('star', 'midpg'):
    assert np.allclose(bar_color[m], line_color[m])
  assert len({tuple(c) for c in colors.values()}) == len(names)


def test_oracle_legend_entry_is_inside_the_legend_box():
  fig = report.scenario_figure(_summary(['a', 'b']), ['s0'], report.model_colors(['a', 'b']))
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  legend = fig.axes[0].get_legend()
  frame = legend.get_frame().get_window_extent(renderer)
  handles = dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
  box = handles['oracle'].get_window_extent(renderer)
  assert np.all(np.isfinite(box.extents))  # a measurable artist (a scatter marker has no extent)
  assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


@pytest.mark.slow
def test_learning_curve_on_a_prepared_dataset_takes_its_first_rows(tmp_path):
  from midpg_jax.data import load_dataset
  from test_datasets import SAMPLE_FILES, shared_samples
  b = config_file('bench/aliccp_curve').get_config()
  b.base.data.manual_dir = str(shared_samples())
  b.base.data.update(SAMPLE_FILES)  # the samples' names, which the default patterns exclude
  b.base.data.prepared_dir = str(tmp_path / 'prepared')
  b.base.data.min_count = 1
  b.base.model.hidden, b.base.model.embed_dim = (8,), 4
  b.base.train.batch_size, b.base.train.eval_batch_size = 16, 64
  b.base.train.num_epochs, b.base.train.progress_bar = 1, False
  b.models = b.learning_curve.models = ('logistic',)
  b.learning_curve.sizes = (48, 96)
  b.output_dir = str(tmp_path / 'out')
  result = compare.run(b)
  assert result['trained'] == 2 and result['rows'] == []  # only the curve
  curve = _csv(tmp_path / 'out' / 'learning_curve.csv')
  assert [(int(r['train_rows']), int(r['steps'])) for r in curve] == [(48, 3), (96, 6)]
  assert all(float(r['wall_s']) > 0 for r in curve)
  assert '96 rows' in (tmp_path / 'out' / 'results.md').read_text()
  # The curve's training split is a view of the prepared, memory-mapped one.
  cfg = plan.variant_config(b, 'logistic', {'model.name': 'logistic'}, 0, train_rows=48)
  train = load_dataset(cfg.data).splits['train']
  assert isinstance(train['cat'], np.memmap) and len(train['label']) == 48

"""The benchmark command: rows per (model, seed), mean ± std table, plots, resumable."""

import csv

import pytest

from midpg_jax import benchmark
from conftest import small_config


def tiny_bench(tmp_path):
  from configs.bench import synthetic
  b = synthetic.get_config()
  base = small_config(num_train=8_000, num_val=3_000, num_test=3_000)
  base.train.num_epochs = 1
  base.train.eval_every_steps = 0
  b.base = base
  # The cheapest models to compile: this tests the benchmark's bookkeeping, not the models.
  b.models = ('logistic', 'shared_bottom')
  b.seeds = (0, 1)
  b.heterogeneity_sweep = (0.0, 1.0)
  b.sweep_models = ('logistic',)
  b.output_dir = str(tmp_path)
  return b


def test_benchmark_writes_results_table_and_plots(tmp_path):
  b = tiny_bench(tmp_path)
  result = benchmark.run(b)
  rows = list(csv.DictReader(open(tmp_path / 'results.csv')))
  assert [(r['model'], r['seed']) for r in rows] == [
      ('logistic', '0'), ('logistic', '1'), ('shared_bottom', '0'), ('shared_bottom', '1')]
  for r in rows:
    assert 0 <= float(r['overall/auc']) <= 1
    assert 0.7 < float(r['overall/oracle_auc']) <= 1
    assert int(r['params']) > 0 and float(r['train_examples_per_s']) > 0
    assert 'scenario_3/auc' in r and 'scenario_0/calibration' in r
  assert int(rows[2]['params']) > int(rows[0]['params'])
  assert rows[0]['overall/auc'] != rows[1]['overall/auc']  # the seeds differ
  md = (tmp_path / 'results.md').read_text()
  assert '± ' in md and '**' in md and '| shared_bottom |' in md and 'Oracle test AUC' in md
  assert 'h=0.0' in md
  sweep = list(csv.DictReader(open(tmp_path / 'heterogeneity.csv')))
  assert sorted(float(r['heterogeneity']) for r in sweep) == [0.0, 1.0]
  for png in ('scenario_auc.png', 'heterogeneity.png'):
    assert (tmp_path / png).stat().st_size > 10_000
  assert result['summary']['shared_bottom']['overall/auc'][2] == 2  # two seeds averaged

  # Resuming trains nothing new and gives the same table.
  again = benchmark.run(b)
  assert len(list(csv.DictReader(open(tmp_path / 'results.csv')))) == 4
  assert again['markdown'] == result['markdown']


def test_unknown_variant_key_is_a_clear_error(tmp_path):
  b = tiny_bench(tmp_path)
  with pytest.raises(ValueError, match='unknown config key'):
    benchmark.variant_config(b, 'bad', {'model.no_such_key': 1}, 0)

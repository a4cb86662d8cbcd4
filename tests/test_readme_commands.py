"""The README's train / eval commands work as written, and a mistake on the command line is one
line (issue 11). Each runs train.py / eval.py in a subprocess, shrunk by --config overrides."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# Appended to the README's train command: the same run, small enough for a test.
SMALL = ['--config.data.num_train=4096', '--config.data.num_val=1000',
         '--config.data.num_test=1000', '--config.model.hidden=(16,)',
         '--config.train.batch_size=256', '--config.train.eval_batch_size=1000',
         '--config.train.progress_bar=False']


def _run(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_readme_train_then_eval_without_the_override(tmp_path):
  workdir = str(tmp_path / 'x')
  # README "Training and evaluation", with num_epochs 5 -> 1 and the data shrunk.
  train = _run('train.py', '--config', 'configs/default.py', '--workdir', workdir,
               '--config.model.midpg.rank=8', '--config.model.midpg.mi_weight=0.05',
               '--config.train.num_epochs=1', *SMALL)
  assert train.returncode == 0, train.stderr[-3000:]
  assert 'best checkpoint (step 16) on test' in train.stdout
  # Exactly the README's eval command: no --config.model.midpg.rank=8, the run's config supplies
  # it.
  predictions = os.path.join(workdir, 'test_predictions.csv')
  ev = _run('eval.py', '--config', 'configs/default.py', '--workdir', workdir, '--split', 'test',
            '--predictions', predictions)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert "using the run's own config" in ev.stdout and 'model.midpg.rank: 4 -> 8' in ev.stdout
  assert 'best checkpoint (step 16) on test' in ev.stdout
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    trained_auc = json.load(f)['test']['overall']['auc']
  with open(os.path.join(workdir, 'eval_test.json')) as f:
    assert json.load(f)['metrics']['overall']['auc'] == pytest.approx(trained_auc, rel=1e-6)
  assert sum(1 for _ in open(predictions)) == 1001
  # An override that would change the trained run: one line, nothing run.
  ev = _run('eval.py', '--workdir', workdir, '--config.model.midpg.rank=4')
  assert ev.returncode == 1
  assert ev.stderr.strip().splitlines() == [
      f'error: --config.model.midpg.rank=4 (the run has 8): {workdir} was trained with another '
      'value; drop the override or use another --workdir']


@pytest.mark.parametrize('args,message', [
    (['--config.model.midpg.rnak=8'], 'error: --config.model.midpg.rnak=8: no config key '
                                      '\'rnak\'. Did you mean "rank" instead of "rnak"?'),
    (['--config', 'configs/default.py', '--config.model.midpg.rnak=8'],
     'error: --config.model.midpg.rnak=8: no config key \'rnak\'. Did you mean "rank" instead of '
     '"rnak"?'),
    # A key from before the per-model blocks names its new place.
    (['--config.model.rank=8'], 'error: --config.model.rank=8: model.rank is now '
                                'model.midpg.rank (per-model config blocks)'),
    (['--config', 'configs/nope.py'], 'error: --config configs/nope.py: no such file'),
    (['--config.train.batch_size=abc'], "error: flag --config.train.batch_size=abc: invalid "
                                        "literal for int() with base 10: 'abc'"),
    (['--config.train.batch_size=0'], 'error: train.batch_size must be positive, got 0'),
])
def test_a_command_line_mistake_is_one_line(tmp_path, args, message):
  proc = _run('train.py', '--workdir', str(tmp_path / 'run'), *args)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [message]
  assert not (tmp_path / 'run').exists()


def _readme_commands() -> list[str]:
  """The README's shell commands (lines of ``` blocks, backslash continuations joined)."""
  lines, inside = [], False
  with open(os.path.join(ROOT, 'README.md')) as f:
    for line in f:
      if line.startswith('```'):
        inside = not inside
      elif inside:
        lines.append(line)
  text = ''.join(lines).replace('\\\n', ' ')
  return [line.split('#')[0].strip() for line in text.splitlines()
          if re.match(r'\s*(cd .*&& )?(python |midpg-)', line)]


def test_every_readme_command_names_a_program_that_exists():
  """Each `python file.py`, `python -m module` and `midpg-*` command of the README names a file
  of the checkout, a module found from its root, or a console entry point of pyproject.toml."""
  import tomllib
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    entry_points = tomllib.load(f)['project']['scripts']
  commands = _readme_commands()
  assert any(c.startswith('python -m scripts.') for c in commands)
  for command in commands:
    words = re.sub(r'^cd \S+ && ', '', command).split()
    if words[0] != 'python':
      assert words[0] in entry_points, command
    elif words[1] == '-m':
      assert importlib.util.find_spec(words[2]) is not None, command
    else:
      assert os.path.isfile(os.path.join(ROOT, words[1])), command


def test_the_readme_scripts_start_without_path_edits():
  """`python -m scripts.<name> --help` from the root, as the README runs them: each imports
  midpg_jax, configs and its sibling scripts without editing sys.path."""
  modules = sorted({c.split()[2] for c in _readme_commands() if c.startswith('python -m scripts.')})
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  procs = {m: subprocess.Popen([sys.executable, '-m', m, '--help'], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for m in modules}
  for module, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1) and '--' in out and 'Traceback' not in err, (module, err)

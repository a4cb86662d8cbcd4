"""Every command the README shows runs as written (shrunk by --config overrides where it trains),
the docs' commands name programs that exist, and a mistake on the command line is one line."""

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

# Appended to a command of the README that trains on the built-in data: the same run, small.
SMALL = ['--config.data.num_train=4096', '--config.data.num_val=1000',
         '--config.data.num_test=1000', '--config.model.hidden=(16,)',
         '--config.train.batch_size=256', '--config.train.eval_batch_size=1000',
         '--config.train.progress_bar=False']
# ... on a real dataset (the 25 clicked rows of the Ali-CCP sample), and for the comparison.
TINY_MODEL = ['--config.model.hidden=(8,)', '--config.model.embed_dim=4',
              '--config.train.batch_size=8', '--config.train.eval_batch_size=64',
              '--config.train.progress_bar=False']
COMPARE_SMALL = ["--config.models=('midpg','logistic')", '--config.grid.learning_rate=(0.01,)',
                 '--config.grid.weight_decay=(0.0,)', '--config.seeds=(0,)',
                 '--config.heterogeneity_sweep=()', '--config.learning_curve.sizes=()',
                 '--config.compilation_cache_dir=', '--config.output_dir=runs/compare',
                 *(a.replace('--config.', '--config.base.') for a in SMALL)]
# README commands a test cannot run as they are, and where they are run instead.
RUN_ELSEWHERE = {
    'make test': 'CI (.ci/run runs it; this test is part of it); here: its make recipe',
    'make test-fast': 'by hand (it is this suite without the slow tests); here: its make recipe',
    'pip install .': 'tests/test_package.py, which runs it in a copy of the checkout',
}


def _run(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _blocks(path: str) -> list[tuple[str, str]]:
  """(language, text) of each ``` block of a markdown file, backslash continuations joined."""
  blocks, lang, lines = [], None, []
  with open(path) as f:
    for line in f:
      if line.startswith('```'):
        if lang is None:
          lang, lines = line[3:].strip(), []
        else:
          blocks.append((lang, ''.join(lines).replace('\\\n', ' ')))
          lang = None
      elif lang is not None:
        lines.append(line)
  return blocks


def _shell_commands(path: str) -> list[str]:
  return [line.split('  #')[0].strip() for lang, text in _blocks(path) if lang != 'python'
          for line in text.splitlines()
          if re.match(r'\s*(\S+=\S+\s+)*(\.venv/bin/)?(python |midpg-|make |pip )', line)]


def _shrunk(command: str) -> str:
  """The command with the overrides that shrink what it trains."""
  words = command.split()
  program = next(w for w in words if '=' not in w or w.startswith('--'))
  if command.startswith('make train'):
    return f'{command} ' + shlex.quote('ARGS=' + ' '.join(map(shlex.quote, SMALL)))
  if program == 'midpg-compare':
    return f'{command} ' + ' '.join(map(shlex.quote, COMPARE_SMALL))
  if program in ('midpg-train', 'python') and ('train.py' in words or program == 'midpg-train'):
    real_data = any(w.startswith('--config.data.manual_dir') for w in words)
    return f'{command} ' + ' '.join(map(shlex.quote, TINY_MODEL if real_data else SMALL))
  return command


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
  """The README's commands, in its order, from a folder holding the checkout's train.py, eval.py
  and configs/ and a tiny Ali-CCP download (`<folder>`, and `new_rows.csv` its test file), with
  this environment's python and midpg-* commands on the PATH; then its Python block."""
  from samples import write_aliccp_sample
  work = tmp_path / 'work'
  work.mkdir()
  for name in ('train.py', 'eval.py', 'configs'):
    (work / name).symlink_to(os.path.join(ROOT, name))
  folder = write_aliccp_sample(tmp_path / 'aliccp', suffix='')
  shutil.copy(os.path.join(folder, 'ali_ccp_test.csv'), work / 'new_rows.csv')
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PATH=f'{os.path.dirname(sys.executable)}:{os.environ["PATH"]}')
  readme = os.path.join(ROOT, 'README.md')
  commands = _shell_commands(readme)
  assert 'make train' in commands
  assert 'midpg-compare --config configs/bench/synthetic.py' in commands
  for command in commands:
    if command in RUN_ELSEWHERE:
      if command.startswith('make'):
        recipe = subprocess.run(['make', '-n', '-C', ROOT, *command.split()[1:]],
                                capture_output=True, text=True)
        assert 'pytest -q tests' in recipe.stdout, (command, recipe)
      continue
    shrunk = _shrunk(command.replace('<folder>', folder))
    if command.startswith('make '):
      shrunk = shrunk.replace('make ', f'make -C {ROOT} WORKDIR={work / "runs" / "default"} ', 1)
    proc = subprocess.run(['bash', '-c', shrunk], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, (shrunk, proc.stdout[-2000:], proc.stderr[-3000:])
  assert (work / 'runs' / 'default' / 'final_metrics.json').exists()
  assert (work / 'runs' / 'x' / 'test_predictions.csv').exists()
  assert len((work / 'scores.csv').read_text().splitlines()) == 51
  assert (work / 'runs' / 'compare' / 'results.md').exists()
  (python,) = [text for lang, text in _blocks(readme) if lang == 'python']
  proc = subprocess.run([sys.executable, '-c', python], cwd=work, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
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


def _doc_commands() -> list[str]:
  """The `python ...` and `midpg-*` commands of the README and docs/, without their environment
  variables and the `.venv/bin/` of their python."""
  pages = [os.path.join(ROOT, 'README.md')] + [
      os.path.join(ROOT, 'docs', f) for f in sorted(os.listdir(os.path.join(ROOT, 'docs')))]
  commands = [re.sub(r'^(\S+=\S+\s+)*(\.venv/bin/)?', '', c) for p in pages
              for c in _shell_commands(p)]
  return [c for c in commands if c.startswith(('python ', 'midpg-'))]


def test_every_documented_command_names_a_program_that_exists():
  """Each `python file.py`, `python -m module` and `midpg-*` command of the README and docs/
  names a file of the checkout, a module found from its root, or a console entry point of
  pyproject.toml."""
  import tomllib
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    entry_points = tomllib.load(f)['project']['scripts']
  commands = _doc_commands()
  assert any(c.startswith('python -m scripts.') for c in commands)
  assert any(c.startswith('python -m benchmarks.speed') for c in commands)
  for command in commands:
    words = command.split()
    if words[0] != 'python':
      assert words[0] in entry_points, command
    elif words[1] == '-m':
      assert importlib.util.find_spec(words[2]) is not None, command
    else:
      assert os.path.isfile(os.path.join(ROOT, words[1])), command


@pytest.mark.slow
def test_the_documented_scripts_start_without_path_edits():
  """`python -m scripts.<name> --help` (and benchmarks.speed) from the root, as the docs run them:
  each imports midpg_jax and its sibling modules without editing sys.path."""
  modules = sorted({c.split()[2] for c in _doc_commands()
                    if c.startswith(('python -m scripts.', 'python -m benchmarks.'))})
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  procs = {m: subprocess.Popen([sys.executable, '-m', m, '--help'], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for m in modules}
  for module, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    assert proc.returncode in (0, 1) and '--' in out and 'Traceback' not in err, (module, err)

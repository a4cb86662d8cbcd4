"""The package: pyproject.toml agrees with the pinned requirements, the wheel holds one package,
and every command works from that wheel installed in a fresh environment."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

from conftest import ROOT


def pyproject() -> dict:
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


def pins(filename: str) -> dict[str, str]:
  out = {}
  with open(os.path.join(ROOT, filename)) as f:
    for line in f:
      line = line.split('#')[0].strip()
      if line:
        name, version = re.fullmatch(r'([A-Za-z0-9_.\-]+)==(\S+)', line).groups()
        out[name.lower().replace('_', '-')] = version
  return out


def declared() -> dict[str, Requirement]:
  project = pyproject()['project']
  reqs = list(project['dependencies'])
  for extra in project['optional-dependencies'].values():
    reqs.extend(extra)
  return {r.name.lower().replace('_', '-'): r for r in map(Requirement, reqs)}


def test_every_pinned_version_lies_in_the_package_range():
  ranges = declared()
  pinned = {**pins('requirements.txt'), **pins('requirements-bench.txt')}
  for name, version in pinned.items():
    assert name in ranges, f'{name}=={version} is pinned but pyproject.toml does not declare it'
    assert ranges[name].specifier.contains(version, prereleases=True), (
        f'{name}=={version} (requirements) is outside pyproject.toml\'s {ranges[name]}')


def test_every_core_dependency_is_pinned():
  pinned = pins('requirements.txt')
  for req in map(Requirement, pyproject()['project']['dependencies']):
    assert req.name.lower() in pinned, (
        f'{req.name} is a dependency but not pinned in requirements.txt')


def test_torch_extra_is_an_exact_pin():
  (torch,) = [Requirement(r) for r in pyproject()['project']['optional-dependencies']['bench']]
  assert torch.name == 'torch' and str(torch.specifier).startswith('==')


@pytest.fixture(scope='module')
def source(tmp_path_factory) -> pathlib.Path:
  """A copy of the checkout's files (a build writes build/ and *.egg-info beside its sources)."""
  source = tmp_path_factory.mktemp('checkout') / 'src'
  files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
  for name in files:
    if os.path.isfile(os.path.join(ROOT, name)):  # not a file deleted from the working tree
      os.makedirs(source / os.path.dirname(name), exist_ok=True)
      shutil.copy(os.path.join(ROOT, name), source / name)
  return source


@pytest.fixture(scope='module')
def wheel(source, tmp_path_factory) -> pathlib.Path:
  """The wheel `pip install .` installs, built without network or build isolation."""
  out = tmp_path_factory.mktemp('wheel')
  proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                         '--no-build-isolation', '-w', str(out), str(source)],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (built,) = out.glob('midpg_jax-*.whl')
  return built


def test_the_wheel_holds_one_package_with_every_command(wheel):
  """One top-level package, midpg_jax (its config builders included): not configs/, benchmarks/,
  reference/, scripts/ or tests/, which stay in the checkout."""
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    entry_points = z.read(next(n for n in names if n.endswith('entry_points.txt'))).decode()
  top_level = {n.split('/')[0] for n in names if not n.split('/')[0].endswith('.dist-info')}
  assert top_level == {'midpg_jax'}
  scripts = pyproject()['project']['scripts']
  assert set(scripts) == {'midpg-train', 'midpg-eval', 'midpg-prepare', 'midpg-predict',
                          'midpg-export', 'midpg-compare', 'midpg-compile'}
  for name, target in scripts.items():
    assert f'{name} = {target}' in entry_points
    assert target.split(':')[0].replace('.', '/') + '.py' in names
  packages = {os.path.dirname(n) for n in names if n.endswith('/__init__.py')}
  expected = {os.path.relpath(folder, ROOT)
              for folder, _, files in os.walk(os.path.join(ROOT, 'midpg_jax'))
              if '__init__.py' in files}
  assert packages == expected
  assert {'midpg_jax/config.py', 'midpg_jax/compare/config.py'} <= names


@pytest.fixture(scope='module')
def installed(source, tmp_path_factory) -> pathlib.Path:
  """A fresh virtual environment where the README's `pip install .` ran in the checkout (a
  non-editable install: pip builds the wheel and installs it), its dependencies borrowed from this
  one: a .pth line appends this environment's site-packages to the path (a plain path line does
  not run that folder's .pth files, so the editable install's finder, which would map midpg_jax
  to the checkout, stays off). Installing jax, flax and torch afresh would take minutes and GBs."""
  venv = tmp_path_factory.mktemp('venv') / 'env'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
  python = venv / 'bin' / 'python'
  site = subprocess.run(
      [str(python), '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
      capture_output=True, text=True, check=True).stdout.strip()
  ours = [p for p in sys.path if p.endswith('site-packages') and os.path.isdir(p)]
  with open(os.path.join(site, 'borrowed_dependencies.pth'), 'w') as f:
    f.write('\n'.join(ours) + '\n')
  proc = subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '-q',
                         '--no-deps', '--no-index', '--no-build-isolation', '.'], cwd=source,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return venv


def _in_venv(venv, folder, *command, timeout=900):
  """`command` run from `folder` with only the virtual environment's bin on the PATH and no
  PYTHONPATH, as a user who installed the wheel runs it."""
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  env.update(PATH=f'{venv / "bin"}:/usr/bin:/bin', JAX_PLATFORMS='cpu')
  proc = subprocess.run([str(c) for c in command], cwd=folder, env=env, capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
  return proc.stdout


# Appended to every training command of the wheel test: a run of a few steps.
_TINY = ['--config.model.hidden=(8,)', '--config.model.embed_dim=4',
         '--config.train.batch_size=32', '--config.train.eval_batch_size=64',
         '--config.train.progress_bar=False', '--config.train.eval_every_steps=0']


@pytest.mark.slow
def test_every_command_works_from_the_installed_wheel(installed, tmp_path):
  """Each midpg-* command, installed from the wheel, runs for real from an unrelated folder on
  tiny data: the packaged default config, a config file of the checkout named by its path, and
  the wheel's own copy of midpg_jax (not the checkout's)."""
  from samples import ALICCP_FILES, write_aliccp_sample
  work = tmp_path / 'elsewhere'
  work.mkdir()
  out = _in_venv(installed, work, installed / 'bin' / 'python', '-c',
                 'import importlib.util, midpg_jax; print(midpg_jax.__file__); '
                 'print(importlib.util.find_spec("configs"))')
  where, configs = out.split()
  assert where.startswith(str(installed)) and configs == 'None'

  # The packaged default config (the built-in data), trained and evaluated.
  synthetic = ['--config.data.num_train=2048', '--config.data.num_val=512',
               '--config.data.num_test=512']
  out = _in_venv(installed, work, 'midpg-train', '--workdir', 'runs/default', *synthetic, *_TINY)
  assert 'midpg - best checkpoint (step 64) on test' in out
  out = _in_venv(installed, work, 'midpg-eval', '--workdir', 'runs/default', '--split', 'test')
  assert 'best checkpoint (step 64) on test' in out
  assert (work / 'runs' / 'default' / 'eval_test.json').exists()

  # A raw dataset: a config file of the checkout by its path, prepared, trained, scored, exported.
  raw = write_aliccp_sample(tmp_path / 'raw')
  aliccp = [f'--config={ROOT}/configs/aliccp.py', f'--config.data.manual_dir={raw}',
            '--config.data.prepared_dir=prepared', '--config.data.clicked_only=False',
            *(f'--config.data.{k}={v}' for k, v in ALICCP_FILES.items())]
  out = _in_venv(installed, work, 'midpg-prepare', *aliccp)
  assert 'train: 100 rows' in out and (work / 'prepared' / 'meta.json').exists()
  out = _in_venv(installed, work, 'midpg-train', '--workdir', 'runs/aliccp', *aliccp, *_TINY)
  assert 'best checkpoint (step 3) on test' in out  # 100 rows, batches of 32
  test_file = os.path.join(raw, ALICCP_FILES['test_files'])
  out = _in_venv(installed, work, 'midpg-predict', '--workdir', 'runs/aliccp', '--input',
                 test_file, '--output', 'scores.csv', '--noprogress', '--compile_cache=')
  assert out.startswith('50 rows scored') and len((work / 'scores.csv').read_text().split()) == 51
  out = _in_venv(installed, work, 'midpg-export', '--workdir', 'runs/aliccp', '--out', 'export')
  assert (work / 'export' / 'model.jaxexport').exists() and 'exported midpg' in out

  # The packaged comparison, cut to one model, one setting, one seed.
  out = _in_venv(installed, work, 'midpg-compare', '--config.output_dir=compare',
                 "--config.models=('logistic',)", '--config.grid.learning_rate=(0.01,)',
                 '--config.grid.weight_decay=(0.0,)', '--config.seeds=(0,)',
                 '--config.bootstrap.reference=logistic', '--config.heterogeneity_sweep=()',
                 '--config.learning_curve.sizes=()', '--config.compilation_cache_dir=',
                 *(a.replace('--config.', '--config.base.') for a in synthetic + _TINY))
  assert '| logistic |' in out and (work / 'compare' / 'results.md').exists()

  # Ahead-of-time compile of the packaged default config for 2 host CPU devices.
  out = _in_venv(installed, work, 'midpg-compile', '--topology', 'cpu:2', '--steps', 'predict',
                 '--per_chip_batch', '64', *synthetic, '--config.model.hidden=(8,)')
  assert "midpg (float32) on cpu:2: 2 x cpu, 1 host(s), mesh {'data': 2, 'model': 1}" in out
  assert 'predict step, global batch 128 (64 rows per device), per device:' in out


def test_version_and_lazy_names():
  import midpg_jax
  assert isinstance(midpg_jax.__version__, str)
  assert callable(midpg_jax.load_run) and callable(midpg_jax.load_exported)
  with pytest.raises(AttributeError):
    midpg_jax.no_such_name

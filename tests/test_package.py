"""The package metadata: pyproject.toml agrees with the pinned requirements, and its commands exist."""

import os
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
    assert req.name.lower() in pinned, f'{req.name} is a dependency but not pinned in requirements.txt'


def test_torch_extra_is_an_exact_pin():
  (torch,) = [Requirement(r) for r in pyproject()['project']['optional-dependencies']['bench']]
  assert torch.name == 'torch' and str(torch.specifier).startswith('==')


def test_console_entry_points_run_from_another_folder(tmp_path):
  """Each console command answers --help, listing its flags, as the installed script calls it (its
  function, each in a fresh process: the absl commands define the same flags), from a folder
  that has no configs/ and no midpg_jax/."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  procs = {}
  for name, target in sorted(pyproject()['project']['scripts'].items()):
    module, function = target.split(':')
    code = f'import sys; sys.argv = [{name!r}, "--help"]; import {module} as m; m.{function}()'
    procs[name] = subprocess.Popen([sys.executable, '-c', code], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    # absl's --help exits with 1, argparse's with 0; both list the command's own flags.
    listed = re.findall(r'^  (--\w+)', out, re.M)
    assert proc.returncode in (0, 1) and len(listed) >= 2, (name, out, err[-3000:])


def test_the_wheel_holds_the_packages_the_commands_and_configs_need(tmp_path):
  """`pip install .` (not editable) installs what a wheel holds: every console entry point's
  module, midpg_jax's subpackages and the configs package the config files import; not the tests,
  the scripts or the PyTorch references."""
  source = tmp_path / 'src'
  source.mkdir()
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(ROOT, name), source)
  for name in ('midpg_jax', 'configs', 'tests', 'scripts', 'reference'):
    if os.path.isdir(os.path.join(ROOT, name)):
      shutil.copytree(os.path.join(ROOT, name), source / name,
                      ignore=shutil.ignore_patterns('__pycache__'))
  proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                         '--no-build-isolation', '-w', str(tmp_path / 'out'), str(source)],
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (wheel,) = (tmp_path / 'out').glob('midpg_jax-*.whl')
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    entry_points = z.read(next(n for n in names if n.endswith('entry_points.txt'))).decode()
  for name, target in pyproject()['project']['scripts'].items():
    assert f'{name} = {target}' in entry_points
    assert target.split(':')[0].replace('.', '/') + '.py' in names
  packages = {os.path.dirname(n) for n in names if n.endswith('/__init__.py')}
  expected = {os.path.relpath(folder, ROOT) for name in ('midpg_jax', 'configs')
              for folder, _, files in os.walk(os.path.join(ROOT, name)) if '__init__.py' in files}
  assert packages == expected
  config_files = {os.path.relpath(os.path.join(folder, f), ROOT)
                  for folder, _, files in os.walk(os.path.join(ROOT, 'configs'))
                  for f in files if f.endswith('.py')}
  assert config_files <= names
  assert not any(n.startswith(('tests/', 'scripts/', 'reference/')) for n in names)


def test_version_and_lazy_names():
  import midpg_jax
  assert isinstance(midpg_jax.__version__, str)
  assert callable(midpg_jax.load_run) and callable(midpg_jax.load_exported)
  with pytest.raises(AttributeError):
    midpg_jax.no_such_name

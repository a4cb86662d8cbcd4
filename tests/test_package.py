"""The package metadata: pyproject.toml agrees with the pinned requirements, and its commands exist."""

import importlib
import os
import re
import tomllib

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


@pytest.mark.parametrize('name', sorted(pyproject()['project']['scripts']))
def test_console_entry_points_resolve_to_functions(name):
  module, function = pyproject()['project']['scripts'][name].split(':')
  assert callable(getattr(importlib.import_module(module), function))


def test_version_and_lazy_names():
  import midpg_jax
  assert isinstance(midpg_jax.__version__, str)
  assert callable(midpg_jax.load_run) and callable(midpg_jax.load_exported)
  with pytest.raises(AttributeError):
    midpg_jax.no_such_name

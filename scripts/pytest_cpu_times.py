"""A pytest plugin that reports CPU seconds per test and per file: wall time depends on the load of
a shared machine, the CPU time a test costs much less.

  python -m pytest -q tests -p scripts.pytest_cpu_times [--cpu-times-json out.json]

Each test's setup, call and teardown are charged to it (a module-scoped fixture to the first test
that asks for it), counting this process (all its threads) and the subprocesses it waited for
(train.py, the distributed workers: os.times' children times). The summary lists the slowest
tests and every file, by CPU seconds, with their wall seconds beside them.
"""

import collections
import json
import os
import time

import pytest

_cpu = collections.defaultdict(float)  # nodeid -> CPU s
_wall = collections.defaultdict(float)  # nodeid -> wall s


def _cpu_now() -> float:
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


def pytest_addoption(parser):
  parser.addoption('--cpu-times-json', default='', help='write {nodeid: [cpu_s, wall_s]} here')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  cpu, wall = _cpu_now(), time.perf_counter()
  yield
  _cpu[item.nodeid] += _cpu_now() - cpu
  _wall[item.nodeid] += time.perf_counter() - wall
  _write(item.config)  # after every test: an interrupted run keeps what it measured


def _write(config):
  out = config.getoption('--cpu-times-json')
  if out:
    with open(out, 'w') as f:
      json.dump({k: [_cpu[k], _wall[k]] for k in _cpu}, f, indent=1)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  if not _cpu:
    return
  write = terminalreporter.write_line
  files = collections.defaultdict(lambda: [0.0, 0.0, 0])
  for nodeid, cpu in _cpu.items():
    f = files[nodeid.split('::')[0]]
    f[0] += cpu
    f[1] += _wall[nodeid]
    f[2] += 1
  terminalreporter.section('CPU seconds per file')
  for name, (cpu, wall, n) in sorted(files.items(), key=lambda kv: -kv[1][0]):
    write(f'{cpu:8.1f} cpu-s {wall:8.1f} wall-s {n:4d} tests  {name}')
  write(f'{sum(_cpu.values()):8.1f} cpu-s {sum(_wall.values()):8.1f} wall-s {len(_cpu):4d} tests  '
        'total')
  terminalreporter.section('CPU seconds per test (slowest 40)')
  for nodeid, cpu in sorted(_cpu.items(), key=lambda kv: -kv[1])[:40]:
    write(f'{cpu:8.1f} cpu-s {_wall[nodeid]:8.1f} wall-s  {nodeid}')

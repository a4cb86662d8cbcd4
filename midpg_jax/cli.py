"""What every command shares: absl flags with one --config flag, the run's own config, the XLA
flags of the process, one line per mistake.

Every command (midpg_jax/commands/: train, eval, prepare, predict, export, compare, compile)
defines its flags with absl, --config with `define_config_flag` (an ml_collections config file, by
default the packaged midpg_jax/config.py, with --config.<key>=<value> overrides), and runs its
`main` through `run`, which first sets the package's XLA flags for the process (`xla_defaults`:
before JAX's backend starts, which is what makes them take effect; importing midpg_jax sets
nothing). A user's mistake (a `UserError`, a missing or broken config file, a config file whose
code raises or imports a missing module, an unknown or mistyped --config.<key> override) ends the
program with one line, `error: ...`, and exit status 1; a bug of ours keeps its traceback.
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
import traceback
from typing import Callable

from absl import app, flags
from ml_collections import config_flags

from midpg_jax import partitioning, run_config, xla_defaults
from midpg_jax.errors import USER_ERRORS, ConfigError

# Raised by ml_collections while it reads --config.<key>=<value> overrides (an unknown key, a value
# of the wrong type) or loads the config file. Caught only around those two calls.
_CONFIG_FLAG_ERRORS = (AttributeError, KeyError, ValueError, TypeError, OSError, SyntaxError,
                       flags.Error)


def _message(e: BaseException) -> str:
  """The innermost readable message of `e`, on one line (KeyError reprs unwrapped)."""
  while e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  while len(text) > 1 and text[0] == text[-1] and text[0] in '"\'' and '\n' not in text:
    try:  # a repr of a message (ml_collections wraps KeyError messages in AttributeError)
      text = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      break
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  if lines and lines[0][0] == "'" and lines[0][-1] == "'":  # a KeyError's key
    lines[0] = f'no config key {lines[0]}.'
  elif isinstance(e, KeyError) and len(lines) == 1:
    lines[0] = f'no config key {lines[0]!r}'
  return ' '.join(lines)


def _config_file_error(e: BaseException) -> str:
  """The one line for a config file whose code raised (a missing import, a bug in get_config):
  the exception and the innermost line of code outside Python's and the packages' own files
  (the config file's, or one it imports)."""
  library = tuple({sysconfig.get_paths()[k] for k in ('stdlib', 'platstdlib', 'purelib',
                                                      'platlib')})
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if not f.filename.startswith('<') and not f.filename.startswith(library)]
  where = f' ({frames[-1].filename}, line {frames[-1].lineno})' if frames else ''
  return f'cannot load --config {_config_file_in_argv()}: {type(e).__name__}: {_message(e)}{where}'


def _raised_by_config_file(e: BaseException) -> BaseException | None:
  """The TypeError or ValueError a config file's code raised, inside the wrappers of
  ml_collections (which re-raises it with the traceback as its message) and absl; None if `e` is
  of another origin."""
  while e is not None:
    if str(e).startswith('Error whilst parsing config file'):
      return e.__context__
    e = e.__cause__ or e.__context__
  return None


def _config_file_in_argv() -> str:
  for i, arg in enumerate(sys.argv[1:], 1):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(sys.argv):
      return sys.argv[i + 1]
  return '(the default)'


def _overrides_in_argv(name: str) -> str:
  given = [a for a in sys.argv[1:] if a.startswith(f'--{name}.')]
  return ' '.join(given)


def _override_error(name: str, e: BaseException) -> str:
  """The one line for a failed --<name>.<key> override: where an old flat model key moved to
  (--config.model.rank -> model.midpg.rank), else ml_collections' own message."""
  for arg in sys.argv[1:]:
    if arg.startswith(f'--{name}.'):
      moved = run_config.moved_key_message(arg[len(name) + 3:].split('=')[0])
      if moved:
        return f'{arg}: {moved}'
  return f'{_overrides_in_argv(name) or "--" + name}: {_message(e)}'


def exit_with(message: str) -> None:
  sys.exit(f'error: {message}')


# The default --config of train, eval and prepare: the package's own config file, found from any
# folder (a path inside the installed package, not one relative to the working directory).
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config.py')


def define_config_flag(help_text: str, default: str | None = DEFAULT_CONFIG,
                       lock_config: bool = True, name: str = 'config') -> None:
  """--config <file>[:<argument>] and its --config.<key>=<value> overrides; `default` None makes
  the flag required. lock_config: an override may not add a key the config lacks.

  ml_collections parses the overrides when the flag is defined, so a mistyped key fails here.
  """
  try:
    config_flags.DEFINE_config_file(name, default, help_text, lock_config=lock_config)
    if default is None:
      flags.mark_flag_as_required(name)
  except _CONFIG_FLAG_ERRORS as e:
    exit_with(_override_error(name, e))


def config_from_flags(workdir: str | None = None, name: str = 'config'):
  """The config of the command line; with `workdir` holding a run, the run's own config with the
  command line's overrides applied (`run_config.resolve`; a note says what came from the run).
  Call after `partitioning.initialize_from_flags`."""
  holder = flags.FLAGS[name]
  try:
    config = getattr(flags.FLAGS, name)
    config.get('model')  # a config file that failed to load raises on first use
  except _CONFIG_FLAG_ERRORS as e:
    filename = config_flags.get_config_filename(holder)
    if not os.path.exists(filename.split(':')[0]):
      raise ConfigError(f'--{name} {filename}: no such file') from None
    raise ConfigError(f'cannot load --{name} {filename}: {_message(e)}') from None
  if workdir is None:
    return config
  config, note = run_config.resolve(workdir, config, config_flags.get_override_values(holder))
  if note and partitioning.is_main_process():
    print(note)
  return config


def config_file_name(name: str = 'config') -> str:
  """The file (with its ':<argument>', if any) that --<name> names."""
  return config_flags.get_config_filename(flags.FLAGS[name])


def _list_in_help(modules) -> None:
  """absl's --help lists the flags of the main module, named by sys.argv[0] (train.py, or the
  console script midpg-train); a command's flags are defined in its package module and, for
  --config and the multi-process flags, in this module and partitioning."""
  for module in modules:
    for flag in flags.FLAGS.get_key_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main: Callable) -> None:
  """app.run(main) after setting the package's XLA flags for this process, printing a UserError
  raised by `main` as one line."""
  xla_defaults.apply()  # before anything starts JAX's backend
  _list_in_help((main.__module__, __name__, partitioning.__name__))

  def guarded(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      exit_with(str(e))

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:  # a bad flag or --config.<key> value
      raised = _raised_by_config_file(e)
      exit_with(_config_file_error(raised) if raised else str(e))
    except _CONFIG_FLAG_ERRORS as e:  # an override naming a key the given --config file lacks
      exit_with(_override_error('config', e))
    except Exception as e:  # noqa: BLE001  the config file's own code raised: the user's code
      exit_with(_config_file_error(e))

  app.run(guarded, flags_parser=parse_flags)

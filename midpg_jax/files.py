"""Writing so that nothing is lost or left half-written, and one process per folder.

A file or a folder is written under a temporary name beside its destination and renamed into place
only once complete, so an error, a full disk or a kill -9 leaves the previous version as it was:

  with replacing(path) as tmp: <write tmp>            a file (`write_text` for a small one)
  with staging_dir(target) as tmp:                    a folder (a prepared dataset, an export)
    <write into tmp>; replace_dir(tmp, target)

A staging folder is held under an flock on `<tmp>.lock` while its process lives. The OS drops an
flock when its process dies, whatever kills it, so the next `staging_dir` of the same target
removes the folders of dead processes (and puts back a previous target whose replacement was cut
short) and never touches the folder of a live one.

`lock(path, busy)` is the same flock as an exclusive lock of a folder (the trainer's workdir): a
second holder gets `InUseError` at once, and a holder killed with kill -9 leaves no stale lock.
The lock file itself stays: deleting it while another process waits on it would let a third one
lock a new file of the same name.

`storage_errors(what)` turns an OSError of the machine (`ENVIRONMENT_ERRNOS`: a full disk, a
read-only folder, no permission) into a `StorageError`, one line naming `what` and the file; any
other OSError is a bug of ours and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from typing import Iterator

from midpg_jax.errors import InUseError, StorageError

log = logging.getLogger(__name__)

ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
                                errno.EACCES, errno.EPERM, errno.EIO})
# What flock raises on a filesystem without locks (some network and FUSE mounts).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})


def storage_message(what: str, code: int, filename: str | None = None, kept: str = '') -> str:
  """'<what>: <file>: No space left on device; <kept>'."""
  where = f'{filename}: ' if filename else ''
  return f'{what}: {where}{os.strerror(code)}' + (f'; {kept}' if kept else '')


@contextlib.contextmanager
def storage_errors(what: str, kept: str = '') -> Iterator[None]:
  """Raises an OSError of the machine inside the block as a StorageError naming `what` (what was
  being written, and where) and `kept` (what is unchanged)."""
  try:
    yield
  except StorageError:
    raise
  except OSError as e:
    if e.errno not in ENVIRONMENT_ERRNOS:
      raise
    raise StorageError(storage_message(what, e.errno, e.filename, kept)) from e


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
  """A new temporary path beside `path` to write; renamed over `path` when the block ends without
  an error, removed otherwise."""
  directory, base = os.path.split(os.path.abspath(path))
  tmp = os.path.join(directory, f'.{base}.{secrets.token_hex(4)}.tmp')
  os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask's mode
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  """`path` holds `text`, or (after an error or a kill) what it held before."""
  with replacing(path) as tmp:
    with open(tmp, 'w') as f:
      f.write(text)


def check_writable(directory: str) -> None:
  """Raises the OSError, naming `directory`, of creating a file in it (read-only, no
  permission, full)."""
  probe = os.path.join(directory, f'.write-probe-{secrets.token_hex(4)}')
  try:
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
  except OSError as e:
    raise OSError(e.errno, e.strerror, directory) from None
  os.remove(probe)


def _flock(fd: int) -> bool | None:
  """Takes the exclusive flock of `fd`: True; held by another process: False; the filesystem
  has no locks: None."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    return False
  except OSError as e:
    if e.errno in _NO_LOCKS:
      return None
    raise


class Lock:
  """An flock held until `release()` or the end of the process."""

  def __init__(self, fd: int):
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the last descriptor drops the flock
      self._fd = None


def lock(path: str, busy: str) -> Lock:
  """The exclusive lock of file `path` (created if missing); InUseError('<busy> (<holder>; lock
  file <path>)') when another process holds it."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    held = _flock(fd)
    if held is False:
      holder = os.pread(fd, 256, 0).decode(errors='replace').strip() or 'another process'
      raise InUseError(f'{busy} ({holder}; lock file {path})')
    if held is None:
      log.warning('%s: this filesystem has no file locks; nothing stops a second process from '
                  'using the same folder', path)
    else:  # who holds it, for the message of the next one
      os.ftruncate(fd, 0)
      os.pwrite(fd, f'held by pid {os.getpid()} on {socket.gethostname()} since '
                    f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n'.encode(), 0)
  except BaseException:
    os.close(fd)
    raise
  return Lock(fd)


def _staging_prefix(target: str) -> tuple[str, str]:
  parent, base = os.path.split(os.path.abspath(target))
  return parent, f'.{base}.tmp-'


def _settle(stem: str, target: str) -> None:
  """Removes what staging folder `stem` left. A replacement of `target` cut between its two
  renames left the previous target at `<stem>.old` and no target: it is put back."""
  old = stem + '.old'
  if os.path.isdir(old) and not os.path.lexists(target):
    os.rename(old, target)
  shutil.rmtree(old, ignore_errors=True)
  shutil.rmtree(stem, ignore_errors=True)


def remove_abandoned(target: str) -> None:
  """Settles the staging folders of `target` whose process is gone (their lock is free)."""
  parent, prefix = _staging_prefix(target)
  for lock_path in glob.glob(os.path.join(glob.escape(parent), glob.escape(prefix) + '*.lock')):
    try:
      fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:  # its process just finished
      continue
    try:
      if _flock(fd):
        _settle(lock_path[:-len('.lock')], target)
        with contextlib.suppress(FileNotFoundError):  # another cleaner was first
          os.remove(lock_path)
    finally:
      os.close(fd)


@contextlib.contextmanager
def staging_dir(target: str) -> Iterator[str]:
  """A new empty folder beside `target` to write `target`'s new version into, then
  `replace_dir(tmp, target)`; whatever is not moved into place is removed on leaving the block.

  The lock file is created and locked before its folder: a cleaner that opens it in between
  (microseconds) deletes a folder that does not exist yet and its lock file; this folder then
  has no lock file and is never cleaned by another process, which is harmless.
  """
  parent, prefix = _staging_prefix(target)
  os.makedirs(parent, exist_ok=True)
  remove_abandoned(target)
  fd, lock_path = tempfile.mkstemp(prefix=prefix, suffix='.lock', dir=parent)
  tmp = lock_path[:-len('.lock')]
  try:
    _flock(fd)  # a new name: no other process holds it
    os.mkdir(tmp)
    yield tmp
  finally:
    try:
      _settle(tmp, target)
    finally:
      os.remove(lock_path)
      os.close(fd)


def replace_dir(tmp: str, target: str) -> None:
  """Moves the complete folder `tmp` of `staging_dir(target)` to `target`. An existing target is
  renamed aside first and deleted only once the new one is in place: a failure (or a kill) in
  between leaves it beside, and `staging_dir` puts it back."""
  if os.path.lexists(target):
    os.rename(target, tmp + '.old')
  os.rename(tmp, target)
  shutil.rmtree(tmp + '.old', ignore_errors=True)

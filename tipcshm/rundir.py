"""A node's private files: the start lock, the supervisor's record and the log.

Shared memory is writable by everyone attached to a node, so nothing in it may decide which
process gets signalled or which file gets written. What `tipcshm start` and `stop` act on
lives instead in a directory only the node's owner can write:

* ``$TIPCSHM_RUNDIR`` if set, else ``/run/tipcshm`` for root, else
  ``$XDG_RUNTIME_DIR/tipcshm``, else ``/tmp/tipcshm-<uid>``; created 0700 and used only
  if it is a real directory of ours that nobody else can write.
* ``<node>.lock``: held (``flock``) by the supervisor for as long as it runs. Two starts of one
  name race for it and exactly one wins; a crashed supervisor's lock dies with it.
* ``<node>.pid``: ``"<pid> <start time>"`` of the supervisor, so that ``stop`` signals that
  process and no other (the start time tells a reused pid apart; see :mod:`tipcshm.proc`).
* ``<node>.conf``: the node's configuration (JSON: identity, geometry, bearers), written by
  the supervisor once it holds the lock and edited by ``tipcshm bearer enable|disable``;
  the workers read it from here (:func:`read_config`), never from argv.
* ``<node>.log``: the supervisor's and workers' log, 0600, capped at :data:`LOG_MAX_BYTES`
  (a flood of bad requests must not fill a disk), removed by ``stop`` unless asked to keep it.

Every file is opened without following symlinks and checked on its descriptor
(:mod:`tipcshm.shm.trust`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import sys

from tipcshm import proc
from tipcshm.errors import UntrustedObject
from tipcshm.shm.trust import Trust, open_checked

__all__ = [
    "LOG_MAX_BYTES",
    "RUNDIR_ENV",
    "runtime_dir",
    "lock_path",
    "record_path",
    "log_path",
    "config_path",
    "write_config",
    "read_config",
    "try_lock",
    "write_record",
    "read_record",
    "remove_files",
    "open_log",
    "CappedLogHandler",
    "setup_logging",
]

RUNDIR_ENV = "TIPCSHM_RUNDIR"
LOG_MAX_BYTES = 4 << 20


def _candidates() -> list[str]:
    explicit = os.environ.get(RUNDIR_ENV)
    if explicit:
        return [explicit]
    euid = os.geteuid()
    out = []
    if euid == 0:
        out.append("/run/tipcshm")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        out.append(os.path.join(xdg, "tipcshm"))
    out.append(f"/tmp/tipcshm-{euid}")
    return out


def runtime_dir() -> str:
    """The owner-only directory of this user's node files, created if needed."""
    euid = os.geteuid()
    errors = []
    for path in _candidates():
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
            continue
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise UntrustedObject(path, "not a directory (a symlink or file was planted there)")
        if st.st_uid != euid:
            raise UntrustedObject(path, f"owned by uid {st.st_uid}, not by you (uid {euid})")
        if st.st_mode & 0o077:
            raise UntrustedObject(path, f"others may write or read it (mode {st.st_mode:#o})")
        return path
    raise OSError(f"no usable tipcshm runtime directory: {'; '.join(errors)}")


def lock_path(node: str) -> str:
    return os.path.join(runtime_dir(), f"{node}.lock")


def record_path(node: str) -> str:
    return os.path.join(runtime_dir(), f"{node}.pid")


def log_path(node: str) -> str:
    return os.path.join(runtime_dir(), f"{node}.log")


def config_path(node: str) -> str:
    return os.path.join(runtime_dir(), f"{node}.conf")


CONFIG_MAX_BYTES = 1 << 20


def write_config(node: str, text: str) -> None:
    """Replace the node's configuration atomically (a reader sees the old or the new one)."""
    path = config_path(node)
    tmp = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = open_checked(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _own(), "file", 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_config(node: str) -> str | None:
    """The node's configuration text, None if it has none (opened as every file here is:
    ours, no symlink, owner-only)."""
    try:
        fd = open_checked(config_path(node), os.O_RDONLY, _own())
    except FileNotFoundError:
        return None
    try:
        chunks = []
        total = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > CONFIG_MAX_BYTES:
                raise OSError(f"{config_path(node)}: larger than {CONFIG_MAX_BYTES} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def _own() -> Trust:
    return Trust(frozenset({os.geteuid()}))


def try_lock(node: str, *, wait: bool = False) -> int | None:
    """Take ``node``'s start lock; its descriptor, or None while another process holds it.

    The lock file may be unlinked by a ``stop`` between our open and our flock; a lock on an
    unlinked file protects nothing, so the name is checked to still be the file we locked.
    """
    path = lock_path(node)
    while True:
        fd = open_checked(path, os.O_RDWR | os.O_CREAT, _own(), "file", 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        mine = os.fstat(fd)
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)  # unlinked or replaced meanwhile: lock the file that is there now


def write_record(node: str, pid: int, start: int) -> None:
    """Record the supervisor's identity (atomically: a reader sees the old or the new one)."""
    path = record_path(node)
    tmp = f"{path}.{pid}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = open_checked(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _own(), "file", 0o600)
    try:
        os.write(fd, f"{pid} {start}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_record(node: str) -> tuple[int, int] | None:
    """``(pid, start time)`` of the node's supervisor if it is alive, else None."""
    record = read_record_any(node)
    if record is None or not proc.alive(*record):
        return None
    return record


def read_record_any(node: str) -> tuple[int, int] | None:
    """``(pid, start time)`` the node's record names, alive or not (a supervisor killed
    with SIGKILL leaves its record behind while it dies); None without a valid record."""
    try:
        fd = open_checked(record_path(node), os.O_RDONLY, _own())
    except FileNotFoundError:
        return None
    try:
        raw = os.read(fd, 64)
    finally:
        os.close(fd)
    try:
        pid_s, start_s = raw.decode("ascii").split()
        pid, start = int(pid_s), int(start_s)
    except ValueError:
        return None
    if not 0 < pid < 1 << 22 or start < 0:
        return None
    return pid, start


def remove_files(node: str, *, keep_log: bool = False) -> None:
    """Remove the record, the log (unless ``keep_log``) and the lock of a stopped node.

    The lock goes last and while held, so a concurrent start either locked it before (then
    the caller could not have taken it) or re-opens the new name after we unlink.
    """
    names = [record_path(node), config_path(node)] + ([] if keep_log else [log_path(node)])
    for path in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    fd = try_lock(node)
    if fd is None:
        return  # a new supervisor took the name meanwhile: its lock stays
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path(node))
    finally:
        os.close(fd)


def open_log(node: str) -> int:
    """The node's log for appending (0600, never through a symlink)."""
    return open_checked(
        log_path(node), os.O_WRONLY | os.O_CREAT | os.O_APPEND, _own(), "file", 0o600
    )


class CappedLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Logs to a stream whose file starts over when it grows past ``limit`` bytes.

    The supervisor and its workers share one log file (the same open file, in append mode),
    so whichever process finds it too long truncates it and says so; it can never exceed
    the limit by more than one record per writer.
    """

    def __init__(self, stream: object = None, limit: int = LOG_MAX_BYTES) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self.stream.fileno()
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size > self.limit:
                self.stream.flush()
                os.ftruncate(fd, 0)
                self.stream.write(f"[log restarted: it reached {self.limit} bytes]\n")
        super().emit(record)


def setup_logging(prefix: str) -> None:
    """Log INFO and up to stderr (the node's log for a background node), capped."""
    handler = CappedLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix} %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)

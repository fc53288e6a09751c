"""Process identity: a pid plus its start time, so that pid reuse is not mistaken for life.

Shared-memory structures (lane slots, socket table entries) record who owns them. A bare pid
is not enough: Linux recycles pids, and a crashed producer's pid may belong to an unrelated
process a minute later. The kernel's per-process start time (field 22 of
``/proc/<pid>/stat``, in clock ticks since boot) never repeats for a pid within one boot,
so the pair ``(pid, start_time)`` names one process for the lifetime of the machine.

Zombies count as dead: a process that has exited but not been reaped still has a
``/proc`` entry with its start time, yet it will never write again, which is what callers
asking :func:`alive` care about.

Pids are those of this process's pid namespace; processes sharing a node must share one.
"""

from __future__ import annotations

import os

__all__ = ["alive", "start_time", "self_token", "stat_state", "pidfd_of", "die_with_parent"]


def _read_stat(pid: int) -> tuple[str, int] | None:
    """Return (state letter, start time) from /proc/<pid>/stat, or None if the pid is gone."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # Field 2 (comm) is "(name)" and the name may itself contain spaces and parentheses,
    # so split after the *last* ')'. What follows starts at field 3 (state).
    close = raw.rfind(b")")
    if close < 0:
        return None
    fields = raw[close + 1 :].split()
    if len(fields) < 20:
        return None
    try:
        return fields[0].decode("ascii", "replace"), int(fields[19])  # fields 3 and 22
    except ValueError:
        return None


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    None if no such process exists (or /proc cannot be read for it).
    """
    st = _read_stat(pid)
    return None if st is None else st[1]


def stat_state(pid: int) -> str | None:
    """The one-letter scheduler state of ``pid`` (R, S, D, Z, ...), or None if gone."""
    st = _read_stat(pid)
    return None if st is None else st[0]


def alive(pid: int, start_time: int) -> bool:
    """True if ``pid`` exists, is the process that started at ``start_time``, and is no zombie."""
    st = _read_stat(pid)
    return st is not None and st[1] == start_time and st[0] not in ("Z", "X", "x")


_self: tuple[int, int] | None = None


def self_token() -> tuple[int, int]:
    """``(pid, start_time)`` of the calling process; cached, recomputed after fork."""
    global _self
    tok = _self
    if tok is None or tok[0] != os.getpid():
        pid = os.getpid()
        st = start_time(pid)
        if st is None:  # pragma: no cover - /proc not mounted
            raise OSError(f"cannot read /proc/{pid}/stat: is /proc mounted?")
        tok = _self = (pid, st)
    return tok


def _reset_after_fork() -> None:
    global _self
    _self = None


os.register_at_fork(after_in_child=_reset_after_fork)


PID_MAX = 1 << 22  # the kernel's ceiling for pid_max on 64-bit


def pidfd_of(pid: int, start: int) -> int:
    """A pidfd of the process ``(pid, start)``, or -1 if no such process is alive.

    The identity is checked after the pidfd is open, so the descriptor cannot refer to a
    process that reused the pid. Any value is accepted (it may come from shared memory):
    out-of-range pids are simply not alive. Callers only wait on it, never signal.
    """
    if not 0 < pid < PID_MAX:
        return -1
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return -1
    if not alive(pid, start):
        os.close(fd)
        return -1
    return fd


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``).

    A node's workers use it so that a supervisor killed with -9 takes its workers along:
    nobody ever has to signal a worker by a pid read from shared memory. If the parent is
    already gone (it died before the call), exit at once.
    """
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent_pid:
        os._exit(1)

"""What ``fileno()`` of a tipcshm socket reports: exact, level-triggered readiness.

Theory of operation
===================

A kernel TIPC socket answers ``poll`` from its own state (net/tipc/socket.c
``tipc_poll``, Linux 6.1): readable while its receive queue holds something (a message, a
returned message, a SYN on a listener) or once it is DISCONNECTING or shut down; writable
while ESTABLISHED and not congested (``tsk_conn_cong``), or while OPEN (RDM, DGRAM and
unconnected sockets; a local link is never congested here); never writable while LISTEN or
CONNECTING; DISCONNECTING is ``POLLIN | POLLHUP`` without ``POLLOUT``.

A tipcshm socket's queue is a set of shared-memory rings plus some queues of its own, so no
kernel object tracks it. :class:`Readiness` is one: one end ``A`` of an ``AF_UNIX
SOCK_STREAM`` socket pair is the descriptor ``fileno()`` returns, the other end ``B`` stays
inside. The socket sets ``A``'s state to its own after every change:

* readable: ``B`` has sent ``A`` one byte that nobody drained (``unix_poll``: the receive
  queue is not empty);
* not writable: ``A`` has filled ``B`` with bytes until its send buffer is full
  (``unix_writable``: unread bytes below a quarter of ``SO_SNDBUF``); draining ``B`` makes
  it writable again;
* hung up: made unwritable (or not) first, then ``shutdown(A, SHUT_RDWR)``: ``poll`` then
  says ``POLLIN | POLLRDHUP | POLLHUP`` for good.

Who keeps it true: every socket call that changes what is queued or the send state sets it
before it returns, and one daemon thread per process (:class:`_Reactor`, started by the
first socket whose ``fileno()`` is asked for, gone with the last) waits with ``epoll`` on
the doorbells of those sockets' inboxes. On a bell it has the socket re-evaluate itself
(``sock._sel_evaluate()``), which drains the bell and re-arms the inbox with the Dekker
protocol of :mod:`tipcshm.shm.lane`, so the next frame rings again. A socket busy in
another thread's call (its receive lock taken) is retried every few milliseconds until the
reactor gets it; the call brings ``A`` up to date itself when it releases the lock.

A socket's re-evaluation reads what waits in its rings as the kernel's receive path
handles each message on arrival (a connection moves every frame into its own queue, so
a peer's end queued behind unread data shows at once, POLLHUP without POLLOUT).

Residual inexactness: as on any kernel socket, a message consumed by one thread while
another sits in ``select`` may leave that one woken for nothing. ``A`` reports
``POLLRDHUP`` with ``POLLHUP`` where the kernel gives ``POLLHUP`` alone, visible only to
callers that ask for ``POLLRDHUP``. An AF_UNIX socket cannot hang up without it while it
lives: ``unix_poll`` and ``unix_dgram_poll`` give ``POLLHUP`` alone only to a socket in
TCP_CLOSE, which a connected socket reaches only by being closed, and an unconnected one
has nothing queued (no POLLIN) and is writable; every other hang-up is ``sk_shutdown``,
whose RCV_SHUTDOWN half is ``POLLRDHUP``. Replacing the descriptor (``dup2``) would drop
its epoll registrations. A pseudo-terminal master does hang up without ``POLLRDHUP``
(its slave closed), but ptys are a scarce system resource and its writability follows
tty buffer thresholds, so it is not used.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import select
import socket as _socket
import threading
import weakref
from typing import Any

from tipcshm.shm.lane import BACKSTOP

__all__ = ["Readiness", "poke", "unwatch", "watch"]

log = logging.getLogger("tipcshm.readiness")

_FILL = bytes(4096)
#: How soon the reactor retries a socket whose receive lock another thread held (s).
RETRY = 0.002


class Readiness:
    """The descriptor a socket's ``fileno()`` returns, and its state (module docstring).

    Thread-safe. :meth:`wait` lets a blocked socket call sleep on the same state a
    selector watches, so the two never take each other's wake-ups.
    """

    def __init__(self) -> None:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        a.setblocking(False)
        b.setblocking(False)
        # The smallest send buffer the kernel allows: filling it costs one or two sends.
        a.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 1)
        self._a: _socket.socket | None = a
        self._b: _socket.socket | None = b
        self._fd = a.fileno()
        self._lock = threading.Lock()
        # Neither until the socket first sets its state: better a selector that waits a
        # moment for the first evaluation than one told a send would not block when it would.
        _fill(a)
        self._readable = False
        self._writable = False
        self._hup = False
        self._closing = False
        self._waiters = 0

    def fileno(self) -> int:
        """The descriptor to hand to select, poll, epoll, selectors or asyncio (-1 once closed)."""
        return self._fd

    @property
    def state(self) -> tuple[bool, bool, bool]:
        """(readable, writable, hung up) as last set."""
        return self._readable, self._writable, self._hup

    def set(self, readable: bool, writable: bool) -> None:
        """Make ``fileno()`` report exactly this (after :meth:`hangup`, only writability moves)."""
        with self._lock:
            a, b = self._a, self._b
            if a is None or b is None:
                return
            if readable != self._readable and not self._hup:
                if readable:
                    b.send(b"\x01")
                else:
                    _drain(a)
                self._readable = readable
            if writable != self._writable:
                if writable:
                    _drain(b)
                else:
                    _fill(a)
                self._writable = writable

    def hangup(self, writable: bool) -> None:
        """The end: readable and ``POLLHUP`` from now on; writable as given (a connection
        that ended is not, a shut down connectionless socket is)."""
        with self._lock:
            a, b = self._a, self._b
            if a is None or b is None or self._hup:
                return
            if writable != self._writable:
                if writable:
                    _drain(b)
                else:
                    _fill(a)
                self._writable = writable
            with contextlib.suppress(OSError):
                a.shutdown(_socket.SHUT_RDWR)
            self._hup = True
            self._readable = True

    def wait(self, events: int, timeout: float | None) -> bool:
        """Block until ``fileno()`` reports one of ``events`` (select.POLLIN / POLLOUT), a
        hang-up, or :meth:`close`; False when ``timeout`` seconds passed first."""
        with self._lock:
            if self._closing or self._a is None:
                return True
            self._waiters += 1
            fd = self._fd
        try:
            poller = select.poll()
            poller.register(fd, events)
            ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
            return bool(poller.poll(ms))
        finally:
            with self._lock:
                self._waiters -= 1
                if self._closing and not self._waiters:
                    self._close_locked()

    def close(self) -> None:
        """Hang up (waking every :meth:`wait`), then close both ends once no one waits."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            a = self._a
            if a is not None and not self._hup:
                with contextlib.suppress(OSError):
                    a.shutdown(_socket.SHUT_RDWR)
                self._hup = True
            if not self._waiters:
                self._close_locked()

    def _close_locked(self) -> None:
        for s in (self._a, self._b):
            if s is not None:
                s.close()
        self._a = self._b = None
        self._fd = -1


def _drain(s: _socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while s.recv(65536):
            pass


def _fill(s: _socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while True:
            s.send(_FILL)


# -- the reactor ------------------------------------------------------------------------


class _Entry:
    """One watched socket: a weak reference to it and a descriptor of its doorbell of the
    reactor's own (a dup, so that the socket closing its inbox never leaves the reactor
    polling, or worse reading, a descriptor number that was reused meanwhile)."""

    __slots__ = ("ref", "fd")

    def __init__(self, ref: weakref.ref[Any], fd: int) -> None:
        self.ref = ref
        self.fd = fd


class _Reactor:
    def __init__(self) -> None:
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self.wake_r, select.EPOLLIN)
        self.entries: dict[int, _Entry] = {}
        self.retry: set[int] = set()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="tipcshm-readiness", daemon=True)

    def wake(self) -> None:
        if self.stopped:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_w, b"\x01")

    def _run(self) -> None:
        global _reactor
        ep = self.ep
        periodic = BACKSTOP < 1.0  # off x86 a bell can be missed: re-evaluate now and then
        while True:
            while _dead:
                key, ref = _dead.popleft()
                unwatch(key, ref)
            with _lock:
                if not self.entries:
                    self.stopped = True
                    if _reactor is self:
                        _reactor = None
                    ep.close()
                    os.close(self.wake_r)
                    os.close(self.wake_w)
                    return
                timeout = RETRY if self.retry else (BACKSTOP if periodic else -1)
            try:
                events = ep.poll(timeout)
            except InterruptedError:
                continue
            with _lock:
                for fd, _ev in events:
                    if fd == self.wake_r:
                        _take(fd)
                        continue
                    entry = self.entries.get(fd)
                    if entry is not None:
                        _take(fd)
                        self.retry.add(fd)
                if not events and periodic:
                    self.retry.update(self.entries)
                todo = [(fd, self.entries[fd]) for fd in self.retry if fd in self.entries]
                self.retry.clear()
            for fd, entry in todo:
                sock = entry.ref()
                if sock is None:
                    continue  # its weakref callback unwatches it
                try:
                    done = sock._sel_evaluate()
                except Exception:  # a socket's trouble must not stop the others' readiness
                    log.exception("re-evaluating the readiness of %r", sock)
                    done = True
                del sock
                if not done:
                    with _lock:
                        self.retry.add(fd)


_lock = threading.Lock()
_reactor: _Reactor | None = None
# (key, weak reference) of sockets collected unclosed: the reference tells whether the key
# still belongs to that socket, as a closed socket's descriptor number is reused.
_dead: collections.deque[tuple[int, weakref.ref[Any]]] = collections.deque()


def watch(sock: Any, bell_fd: int) -> int:
    """Have the reactor re-evaluate ``sock`` (``sock._sel_evaluate()``) whenever its
    doorbell rings, and once now. Returns the key for :func:`poke` and :func:`unwatch`."""
    global _reactor
    fd = os.dup(bell_fd)
    os.set_inheritable(fd, False)
    key = fd

    def gone(ref: weakref.ref[Any]) -> None:
        # Runs wherever the GC happens to run, perhaps under _lock: take no lock here.
        _dead.append((key, ref))
        r = _reactor
        if r is not None:
            r.wake()

    with _lock:
        r = _reactor
        start = r is None or r.stopped
        if start:
            r = _reactor = _Reactor()
        assert r is not None
        r.entries[fd] = _Entry(weakref.ref(sock, gone), fd)
        r.ep.register(fd, select.EPOLLIN)
        r.retry.add(fd)
        if start:
            r.thread.start()
        else:
            r.wake()
    return key


def poke(key: int) -> None:
    """Have the reactor re-evaluate the socket soon (its state changed where its caller
    could not bring ``fileno()`` up to date: the receive lock was taken)."""
    with _lock:
        r = _reactor
        if r is None or key not in r.entries:
            return
        r.retry.add(key)
        r.wake()


def unwatch(key: int, ref: weakref.ref[Any] | None = None) -> None:
    """Stop watching (idempotent); the reactor ends when nothing is left to watch. With
    ``ref``, only if ``key`` is still that socket's: keys are descriptor numbers, and a
    number a closed socket gave back may be watching another socket by now."""
    with _lock:
        r = _reactor
        if r is None:
            return
        entry = r.entries.get(key)
        if entry is None or (ref is not None and entry.ref is not ref):
            return
        del r.entries[key]
        r.retry.discard(key)
        with contextlib.suppress(OSError, ValueError):
            r.ep.unregister(key)
        os.close(key)
        if not r.entries:
            r.wake()


def _take(fd: int) -> None:
    try:
        while len(os.read(fd, 4096)) == 4096:
            pass
    except BlockingIOError:
        pass
    except OSError as e:
        if e.errno != errno.EBADF:
            raise


def _after_fork_in_child() -> None:
    # The reactor thread is the parent's: the child starts its own when it needs one.
    global _lock, _reactor
    r = _reactor
    _lock = threading.Lock()
    _reactor = None
    _dead.clear()
    if r is not None:
        for fd in (*r.entries, r.wake_r, r.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError, ValueError):
            r.ep.close()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RefreshingLock:
    """The receive lock of a socket in select mode: the same mutex, but releasing it first
    brings the socket's ``fileno()`` up to date (``sock._sel_refresh()``), so that every
    call that took the receive side leaves the descriptor telling the truth. Sockets that
    never call ``fileno()`` keep their plain lock, and their fast paths pay nothing."""

    __slots__ = ("_lock", "_sock")

    def __init__(self, lock: Any, sock: Any) -> None:
        self._lock = lock
        self._sock = weakref.ref(sock)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        try:
            sock = self._sock()
            if sock is not None:
                sock._sel_refresh()
        except Exception:  # the call's own outcome matters more; the reactor retries
            log.debug("refreshing readiness", exc_info=True)
            sock = self._sock()
            if sock is not None and sock._ready_key >= 0:
                poke(sock._ready_key)
        finally:
            self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

"""Timeouts as the stdlib and the kernel give them.

settimeout(t > 0) (and setdefaulttimeout, read when a socket is made) bounds each call and
raises the stdlib's socket.timeout ("timed out", no errno); a blocking socket waits per
the kernel's timers instead: SO_RCVTIMEO / SO_SNDTIMEO end with EAGAIN, TIPC_CONN_TIMEOUT
ends a connect with ETIMEDOUT. Each check asserts the error and that at least the time
asked for went by; upper bounds are generous.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import connected_trio

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOL_TIPC,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
)

SOL = socket.SOL_SOCKET
SERVICE = 7200
T = 0.3  # the timeout asked for
LONG = (
    6.0  # generous: a wait that ignored the timeout would take 8 s (TIPC_CONN_TIMEOUT) or forever
)

pytestmark = pytest.mark.shared_node  # tests only open sockets: one node per file


def timeval(seconds: float) -> bytes:
    return struct.pack("=qq", int(seconds), round((seconds % 1) * 1e6))


def expect_timeout(call: Callable[[], object], at_least: float = T) -> None:
    """``call`` raises the stdlib's socket.timeout after at least ``at_least`` seconds."""
    t0 = time.monotonic()
    with pytest.raises(socket.timeout) as info:
        call()
    took = time.monotonic() - t0
    assert at_least <= took < LONG, took
    assert str(info.value) == "timed out"
    assert info.value.errno is None
    assert isinstance(info.value, OSError)


def expect_eagain(call: Callable[[], object], at_least: float = T) -> None:
    t0 = time.monotonic()
    with pytest.raises(BlockingIOError) as info:
        call()
    took = time.monotonic() - t0
    assert at_least <= took < LONG, took
    assert info.value.errno == errno.EAGAIN


@contextlib.contextmanager
def default_timeout(value: float | None) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(value)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def connected(node: str, kind: int, instance: int = 1):
    return connected_trio(node, kind, SERVICE, instance)


def test_rdm_recv_and_accept_forms(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s:
        s.settimeout(T)
        assert s.gettimeout() == T
        expect_timeout(lambda: s.recv(10))
        expect_timeout(lambda: s.recvfrom(10))
        expect_timeout(lambda: s.recv_into(bytearray(10)))
        expect_timeout(lambda: s.recvmsg(10))
        s.settimeout(None)
        s.setsockopt(SOL, socket.SO_RCVTIMEO, timeval(T))
        expect_eagain(lambda: s.recv(10))
        expect_eagain(lambda: s.recvfrom(10))
        # a Python timeout wins over SO_RCVTIMEO, as under the stdlib (non-blocking fd)
        s.setsockopt(SOL, socket.SO_RCVTIMEO, timeval(0.05))
        s.settimeout(T)
        expect_timeout(lambda: s.recv(10))
        # a negative SO_RCVTIMEO means "do not wait" (sock_set_timeout)
        s.settimeout(None)
        s.setsockopt(SOL, socket.SO_RCVTIMEO, struct.pack("=qq", -1, 0))
        expect_eagain(lambda: s.recv(10), at_least=0)


def test_setdefaulttimeout_is_read_at_creation(node: str) -> None:
    with default_timeout(T):
        s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    with default_timeout(None), s:
        assert s.gettimeout() == T
        expect_timeout(lambda: s.recv(10))
        with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as later:
            assert later.gettimeout() is None


def test_settimeout_arguments_as_the_stdlib(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s, socket.socket() as k:
        for bad in ("1", b"1", [], -1, float("nan")):
            with pytest.raises(Exception) as ours:
                s.settimeout(bad)  # type: ignore[arg-type]
            with pytest.raises(Exception) as theirs:
                k.settimeout(bad)  # type: ignore[arg-type]
            assert type(ours.value) is type(theirs.value), bad
            assert str(ours.value) == str(theirs.value), bad
        s.settimeout(2)
        assert s.gettimeout() == 2.0
        s.setblocking(False)
        assert s.gettimeout() == 0.0


def test_rdm_send_to_a_full_receiver(node: str) -> None:
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as r,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s,
    ):
        dest = (TIPC_ADDR_ID, 0, r.port, 0)
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            while True:
                s.sendto(b"x" * 60000, dest)
        s.settimeout(T)
        expect_timeout(lambda: s.sendto(b"x" * 60000, dest))
        s.settimeout(None)
        s.setsockopt(SOL, socket.SO_SNDTIMEO, timeval(T))
        expect_eagain(lambda: s.sendto(b"x" * 60000, dest))


@pytest.mark.parametrize("kind", [SOCK_SEQPACKET, SOCK_STREAM])
def test_connection_recv_forms(node: str, kind: int) -> None:
    srv, c, b = connected(node, kind)
    with srv, c, b:
        c.settimeout(T)
        expect_timeout(lambda: c.recv(10))
        expect_timeout(lambda: c.recv_into(bytearray(10)))
        expect_timeout(lambda: c.recvmsg(10))
        c.settimeout(None)
        c.setsockopt(SOL, socket.SO_RCVTIMEO, timeval(T))
        expect_eagain(lambda: c.recv(10))
        expect_eagain(lambda: c.recv_into(bytearray(10)))
        b.sendall(b"still works")
        assert c.recv(100) == b"still works"


def test_accept_timeout_and_so_rcvtimeo(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as srv:
        srv.bind((TIPC_ADDR_NAME, SERVICE, 5, 0))
        srv.listen(1)
        srv.settimeout(T)
        expect_timeout(srv.accept)
        srv.settimeout(None)
        srv.setsockopt(SOL, socket.SO_RCVTIMEO, timeval(T))
        expect_eagain(srv.accept)


def test_connect_uses_the_python_timeout_not_tipc_conn_timeout(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as srv:
        srv.bind((TIPC_ADDR_NAME, SERVICE, 6, 0))
        srv.listen(1)  # never accepts
        with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as c:
            assert c.getsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT) == 8000
            # the kernel keeps it in 16 bits (struct tipc_sock.conn_timeout)
            c.setsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT, 0x10000 + 300)
            assert c.getsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT) == 300
            c.settimeout(T)
            expect_timeout(lambda: c.connect((TIPC_ADDR_NAME, SERVICE, 6, 0)))
        with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as c:
            # without one, the kernel's timer: TIPC_CONN_TIMEOUT, then ETIMEDOUT; the
            # socket's SO_SNDTIMEO does not apply to connect (tipc_connect)
            c.setsockopt(SOL, socket.SO_SNDTIMEO, timeval(0.05))
            c.setsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT, int(T * 1000))
            t0 = time.monotonic()
            with pytest.raises(TimeoutError) as info:
                c.connect((TIPC_ADDR_NAME, SERVICE, 6, 0))
            assert info.value.errno == errno.ETIMEDOUT
            assert T <= time.monotonic() - t0 < LONG
        with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as c:
            # TIPC_CONN_TIMEOUT 0 makes a blocking connect return at once (tipc_connect)
            c.setsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT, 0)
            with pytest.raises(BlockingIOError) as info:
                c.connect((TIPC_ADDR_NAME, SERVICE, 6, 0))
            assert info.value.errno == errno.EINPROGRESS


def test_stream_send_to_a_peer_that_does_not_read(node: str) -> None:
    srv, c, b = connected(node, SOCK_STREAM, instance=2)
    with srv, c, b:
        c.settimeout(T)
        with pytest.raises(socket.timeout):
            c.sendall(b"x" * (64 << 20))
        c.settimeout(None)
        c.setsockopt(SOL, socket.SO_SNDTIMEO, timeval(T))
        expect_eagain(lambda: c.send(b"x" * 65000))


def test_sendall_timeout_bounds_the_whole_call(node: str) -> None:
    """The stdlib's sendall counts its timeout over the whole call (sock_sendall): a
    reader that keeps taking a little never lets one send wait long, yet the call ends."""
    srv, c, b = connected(node, SOCK_STREAM, instance=3)
    stop = threading.Event()

    def slow_reader() -> None:
        b.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(socket.timeout):
                b.recv(65536)
            stop.wait(0.02)

    t = threading.Thread(target=slow_reader)
    t.start()
    try:
        with srv, c:
            c.settimeout(1.0)
            expect_timeout(lambda: c.sendall(b"x" * (256 << 20)), at_least=1.0)
    finally:
        stop.set()
        t.join(10)
        b.close()

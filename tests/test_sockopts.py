"""SOL_SOCKET options answer as a kernel socket does.

The generic options are served by the same code of net/core/sock.c for every address
family, so the reference here is the running kernel itself: each option is set on a
tipcshm socket and on a kernel AF_UNIX socket, and both must then read back the same
bytes, or fail with the same errno. TIPC's own answers (its default receive buffer, no
peer credentials, SO_ACCEPTCONN of a listener) are checked against the kernel's sources.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time

import pytest

import tipcshm
from tipcshm import AF_TIPC, SOCK_DGRAM, SOCK_RDM, SOCK_SEQPACKET, SOCK_STREAM

pytestmark = pytest.mark.shared_node  # tests only open sockets: one node per file

SOL = socket.SOL_SOCKET
TIMEVAL = struct.Struct("=qq")
LINGER = struct.Struct("=ii")
SO_COOKIE = 57
SO_TIMESTAMP = 29  # asm-generic/socket.h; the stdlib module lacks it


def kernel_socket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def outcome(s: object, level: int, option: int, *args: object, put: bool = False) -> object:
    """What getsockopt (or setsockopt with ``put``) gives: the value, ('errno', n), or the
    exception type."""
    try:
        return getattr(s, "setsockopt" if put else "getsockopt")(level, option, *args)
    except OSError as e:
        return ("errno", e.errno) if e.errno is not None else (type(e).__name__, str(e))
    except (TypeError, OverflowError) as e:
        return type(e).__name__


def test_defaults_are_a_kernel_tipc_sockets(node: str) -> None:
    rmem_default = 2 * 1024 * 1024  # tipc_sk_create: sysctl_tipc_rmem[1]
    with open("/proc/sys/net/core/wmem_default") as f:
        wmem_default = int(f.read())
    for kind in (SOCK_RDM, SOCK_DGRAM, SOCK_SEQPACKET, SOCK_STREAM):
        with tipcshm.socket(AF_TIPC, kind, node=node) as s:
            assert s.getsockopt(SOL, socket.SO_TYPE) == kind
            assert s.getsockopt(SOL, socket.SO_DOMAIN) == AF_TIPC
            assert s.getsockopt(SOL, socket.SO_PROTOCOL) == 0
            assert s.getsockopt(SOL, socket.SO_ERROR) == 0
            assert s.getsockopt(SOL, socket.SO_ACCEPTCONN) == 0
            assert s.getsockopt(SOL, socket.SO_RCVBUF) == rmem_default
            assert s.getsockopt(SOL, socket.SO_SNDBUF) == wmem_default
            assert s.getsockopt(SOL, socket.SO_RCVLOWAT) == 1
            assert s.getsockopt(SOL, socket.SO_SNDLOWAT) == 1
            for opt in (socket.SO_REUSEADDR, socket.SO_KEEPALIVE, socket.SO_BROADCAST):
                assert s.getsockopt(SOL, opt) == 0
            assert s.getsockopt(SOL, socket.SO_RCVTIMEO, 16) == bytes(16)
            assert s.getsockopt(SOL, socket.SO_SNDTIMEO, 16) == bytes(16)
            assert s.getsockopt(SOL, socket.SO_LINGER, 8) == bytes(8)
            # no peer credentials on TIPC: cred_to_ucred(NULL, NULL) = {0, -1, -1}
            assert s.getsockopt(SOL, socket.SO_PEERCRED, 12) == struct.pack(
                "=iII", 0, ~0 & 0xFFFFFFFF, ~0 & 0xFFFFFFFF
            )
            assert s.getsockopt(SOL, socket.SO_BINDTODEVICE) == 0
            assert s.getsockopt(SOL, socket.SO_BINDTODEVICE, 16) == b""


def test_reuseport_is_refused_as_linux_6_1_refuses_it(node: str) -> None:
    """Linux 6.1 (6.1.192, recorded by tools/interop/sockcheck) refuses SO_REUSEPORT
    outside inet with EOPNOTSUPP; turning it off is accepted and it reads 0."""
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s:
        with pytest.raises(OSError) as info:
            s.setsockopt(SOL, socket.SO_REUSEPORT, 1)
        assert info.value.errno == errno.EOPNOTSUPP and "SO_REUSEPORT" in str(info.value)
        s.setsockopt(SOL, socket.SO_REUSEPORT, 0)
        assert s.getsockopt(SOL, socket.SO_REUSEPORT) == 0


def test_acceptconn_of_a_listener(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_SEQPACKET, node=node) as s:
        s.bind((tipcshm.TIPC_ADDR_NAME, 7100, 1, 0))
        s.listen(1)
        assert s.getsockopt(SOL, socket.SO_ACCEPTCONN) == 1


# (option, value) pairs set on both sockets; what reads back must be equal
SETTINGS = [
    (socket.SO_REUSEADDR, 1),
    (socket.SO_REUSEADDR, 0),
    (socket.SO_KEEPALIVE, 7),
    (socket.SO_BROADCAST, 1),
    (socket.SO_OOBINLINE, 1),
    (socket.SO_PASSCRED, 1),
    (socket.SO_RCVBUF, 1000),
    (socket.SO_RCVBUF, 0),
    (socket.SO_RCVBUF, -1),
    (socket.SO_RCVBUF, 10**9),
    (socket.SO_SNDBUF, 65536),
    (socket.SO_SNDBUF, 1),
    (socket.SO_RCVLOWAT, 0),
    (socket.SO_RCVLOWAT, -5),
    (socket.SO_RCVLOWAT, 100),
    (socket.SO_PRIORITY, 3),
    (socket.SO_LINGER, LINGER.pack(1, 5)),
    (socket.SO_LINGER, LINGER.pack(0, 9)),
    (socket.SO_RCVTIMEO, TIMEVAL.pack(1, 500000)),
    (socket.SO_RCVTIMEO, TIMEVAL.pack(0, 1)),
    (socket.SO_RCVTIMEO, TIMEVAL.pack(-1, 0)),
    (socket.SO_RCVTIMEO, TIMEVAL.pack(0, 0)),
    (socket.SO_SNDTIMEO, TIMEVAL.pack(2, 999999)),
    (socket.SO_BINDTODEVICE, b"lo"),
    (socket.SO_BINDTODEVICE, b""),
]


@pytest.mark.parametrize("kind", [SOCK_RDM, SOCK_STREAM])
def test_set_then_get_matches_the_kernel(node: str, kind: int) -> None:
    with tipcshm.socket(AF_TIPC, kind, node=node) as s, kernel_socket() as k:
        for option, value in SETTINGS:
            assert outcome(s, SOL, option, value, put=True) == outcome(
                k, SOL, option, value, put=True
            ), option
            for buflen in ((), (0,), (2,), (4,), (8,), (16,), (64,)):
                want = outcome(k, SOL, option, *buflen)
                assert outcome(s, SOL, option, *buflen) == want, (option, value, buflen)


# (option, value[, optlen]) that the kernel refuses; the errno must be the kernel's
REFUSED = [
    (socket.SO_TYPE, 1),
    (socket.SO_PROTOCOL, 1),
    (socket.SO_DOMAIN, 1),
    (socket.SO_ERROR, 1),
    (socket.SO_ACCEPTCONN, 1),
    (socket.SO_PEERCRED, 1),
    (socket.SO_SNDLOWAT, 1),
    (999, 1),
    (socket.SO_REUSEADDR, b"\1\0"),
    (socket.SO_REUSEADDR, None, 4),
    (socket.SO_REUSEADDR, None, 2),
    (socket.SO_LINGER, 1),
    (socket.SO_RCVTIMEO, 1),
    (socket.SO_RCVTIMEO, TIMEVAL.pack(1, 1_000_000)),
    (socket.SO_RCVTIMEO, TIMEVAL.pack(1, -1)),
    (socket.SO_BINDTODEVICE, b"no-such-dev0"),
    (socket.SO_BINDTODEVICE, None, 4),
]


def test_refusals_match_the_kernel(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s, kernel_socket() as k:
        for option, *args in REFUSED:
            got = outcome(s, SOL, option, *args, put=True)
            assert got == outcome(k, SOL, option, *args, put=True), (option, args)
            assert isinstance(got, tuple) and got[0] == "errno", (option, args, got)
        for option in (999, SO_COOKIE):
            assert outcome(s, SOL, option) == outcome(k, SOL, option), option
        for buflen in (-1, 1025):  # CPython's own check, before the kernel's
            assert outcome(s, SOL, socket.SO_RCVBUF, buflen) == outcome(
                k, SOL, socket.SO_RCVBUF, buflen
            )
        assert outcome(s, SOL, socket.SO_REUSEADDR, "x", put=True) == "TypeError"
        assert outcome(s, SOL, socket.SO_REUSEADDR, 1, 4, put=True) == "TypeError"


def test_errors_name_the_option(node: str) -> None:
    with tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as s:
        with pytest.raises(OSError, match="SO_RCVTIMEO") as info:
            s.setsockopt(SOL, socket.SO_RCVTIMEO, TIMEVAL.pack(0, 10**6))
        assert info.value.errno == errno.EDOM
        with pytest.raises(OSError, match="SO_TYPE") as info:
            s.setsockopt(SOL, socket.SO_TYPE, 1)
        assert info.value.errno == errno.ENOPROTOOPT
        with pytest.raises(OSError, match="SO_BINDTODEVICE") as info:
            s.setsockopt(SOL, socket.SO_BINDTODEVICE, b"no-such-dev0")
        assert info.value.errno == errno.ENODEV
        with pytest.raises(NotImplementedError, match="timestamps"):
            s.setsockopt(SOL, SO_TIMESTAMP, 1)
        s.setsockopt(SOL, SO_TIMESTAMP, 0)  # off is what it is


def test_cookie_is_unique_per_socket(node: str) -> None:
    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as a,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as b,
    ):
        ca, cb = (struct.unpack("=Q", s.getsockopt(SOL, SO_COOKIE, 8))[0] for s in (a, b))
        assert ca and cb and ca != cb
        assert a.getsockopt(SOL, SO_COOKIE, 8) == struct.pack("=Q", ca)


def test_closed_socket_options_raise_ebadf(node: str) -> None:
    s = tipcshm.socket(AF_TIPC, SOCK_RDM, node=node)
    s.close()
    for call in (
        lambda: s.getsockopt(SOL, socket.SO_TYPE),
        lambda: s.setsockopt(SOL, socket.SO_REUSEADDR, 1),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF


def test_rcvlowat_makes_stream_recv_wait_for_that_many_bytes(node: str) -> None:
    """tipc_recvstream waits for sock_rcvlowat() bytes on a blocking socket: until then,
    or until SO_RCVTIMEO ends the wait, and then returns what it copied."""
    srv = tipcshm.socket(AF_TIPC, SOCK_STREAM, node=node)
    srv.bind((tipcshm.TIPC_ADDR_NAME, 7101, 1, 0))
    srv.listen(1)
    c = tipcshm.socket(AF_TIPC, SOCK_STREAM, node=node)
    t = threading.Thread(target=c.connect, args=((tipcshm.TIPC_ADDR_NAME, 7101, 1, 0),))
    t.start()
    b, _ = srv.accept()
    t.join(10)
    with srv, c, b:
        b.setsockopt(SOL, socket.SO_RCVLOWAT, 10)
        c.sendall(b"abc")
        c.sendall(b"defghij")
        assert b.recv(100) == b"abcdefghij"
        c.sendall(b"0123456789")
        assert b.recv(4) == b"0123"  # never more than asked for
        assert b.recv(6) == b"456789"
        c.sendall(b"xyz")
        b.setsockopt(SOL, socket.SO_RCVTIMEO, struct.pack("=qq", 0, 200000))
        t0 = time.monotonic()
        assert b.recv(100) == b"xyz"  # SO_RCVTIMEO ended the wait: what it has
        assert time.monotonic() - t0 >= 0.2
        c.sendall(b"uvw")
        b.setblocking(False)
        assert b.recv(100) == b"uvw"  # non-blocking: what is there, at once


def test_tipc_level_buflen_forms(node: str) -> None:
    """tipc_getsockopt writes the whole u32 or fails with EINVAL; TCP options on a
    STREAM socket read as nothing; CPython's buflen range check comes first."""
    with tipcshm.socket(AF_TIPC, SOCK_STREAM, node=node) as s:
        imp = tipcshm.TIPC_IMPORTANCE
        s.setsockopt(tipcshm.SOL_TIPC, imp, 2)
        assert s.getsockopt(tipcshm.SOL_TIPC, imp) == 2
        assert s.getsockopt(tipcshm.SOL_TIPC, imp, 4) == struct.pack("=I", 2)
        assert s.getsockopt(tipcshm.SOL_TIPC, imp, 64) == struct.pack("=I", 2)
        with pytest.raises(OSError) as info:
            s.getsockopt(tipcshm.SOL_TIPC, imp, 2)
        assert info.value.errno == errno.EINVAL
        for buflen in (-1, 1025):
            with pytest.raises(OSError, match="buflen out of range"):
                s.getsockopt(tipcshm.SOL_TIPC, imp, buflen)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 4) == b""


def test_rcvbuf_limits_what_a_sender_may_queue(node: str) -> None:
    """SO_RCVBUF bounds the receive queue (tipc_sk_rcv / rcvbuf_limit): over it, an RDM
    sender blocks (BlockingIOError when non-blocking) where the kernel would reject with
    TIPC_ERR_OVERLOAD, and a DGRAM message is dropped and counted. An empty queue still
    takes one message of any size."""

    def fill(tx: tipcshm.Socket, dest: tuple) -> int:
        tx.setblocking(False)
        sent = 0
        with pytest.raises(BlockingIOError):
            while True:
                tx.sendto(b"x" * 1000, dest)
                sent += 1
        return sent

    with (
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as rx,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as tx,
        tipcshm.socket(AF_TIPC, SOCK_RDM, node=node) as rx2,
        tipcshm.socket(AF_TIPC, SOCK_DGRAM, node=node) as dg,
    ):
        unlimited = fill(tx, (tipcshm.TIPC_ADDR_ID, 0, rx2.port, 0))  # a whole lane
        rx.setsockopt(SOL, socket.SO_RCVBUF, 4096)
        limit = rx.getsockopt(SOL, socket.SO_RCVBUF)
        assert limit == 8192  # doubled, as the kernel reports it
        dest = (tipcshm.TIPC_ADDR_ID, 0, rx.port, 0)
        sent = fill(tx, dest)
        assert 1 <= sent <= limit // 1000 < unlimited
        assert rx.recv(2000) == b"x" * 1000  # room again for one more
        tx.sendto(b"x" * 1000, dest)
        for _ in range(sent):
            rx.recv(2000)
        tx.sendto(b"y" * 60000, dest)  # larger than the limit, into an empty queue
        assert rx.recv(65536) == b"y" * 60000
        before = dg.statistics()["drops"]
        for _ in range(50):
            dg.sendto(b"d" * 1000, dest)
        assert dg.statistics()["drops"] - before >= 50 - limit // 1000

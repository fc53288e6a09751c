"""Argument errors raise what socket.socket / the kernel raise, before any data moves; and a
send to a receiver that went away fails as TIPC does, never with an internal exception."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

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

# One node for the module's tests (tests/conftest.py); those that need their own say so.
pytestmark = pytest.mark.shared_node

SERVICE = 7100
MESSAGE = b"hello, intact message"


def sock(node: str, kind: int) -> tipcshm.Socket:
    return tipcshm.socket(AF_TIPC, kind, node=node)


@contextmanager
def endpoints(node: str, kind: int) -> Iterator[tuple[Any, Any]]:
    """(sender, receiver) of ``kind``: connected for SEQPACKET/STREAM."""
    if kind == SOCK_RDM:
        with sock(node, kind) as tx, sock(node, kind) as rx:
            tx.connect((TIPC_ADDR_ID, 0, rx.port, 0))
            yield tx, rx
        return
    with sock(node, kind) as srv, sock(node, kind) as tx:
        srv.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
        srv.listen(4)
        t = threading.Thread(target=tx.connect, args=((TIPC_ADDR_NAME, SERVICE, 1, 0),))
        t.start()
        rx, _ = srv.accept()
        t.join(10)
        with rx:
            yield tx, rx


# recv-family calls, each run on ours and on a stdlib socketpair: same exception, same text.
BAD_RECV: list[tuple[str, Callable[[Any], object]]] = [
    ("recv(-1)", lambda s: s.recv(-1)),
    ("recv(1.5)", lambda s: s.recv(1.5)),
    ("recv('x')", lambda s: s.recv("x")),
    ("recv(None)", lambda s: s.recv(None)),
    ("recv(2**70)", lambda s: s.recv(2**70)),
    ("recv(10, 1.5)", lambda s: s.recv(10, 1.5)),
    ("recv(10, 'x')", lambda s: s.recv(10, "x")),
    ("recv(10, 0.0)", lambda s: s.recv(10, 0.0)),
    ("recv(10, 2**40)", lambda s: s.recv(10, 2**40)),
    ("recv(-1, 'x')", lambda s: s.recv(-1, "x")),
    ("recvfrom(-1)", lambda s: s.recvfrom(-1)),
    ("recvfrom(1.5)", lambda s: s.recvfrom(1.5)),
    ("recvfrom(10, 'x')", lambda s: s.recvfrom(10, "x")),
    ("recvmsg(-1)", lambda s: s.recvmsg(-1)),
    ("recvmsg(1.5)", lambda s: s.recvmsg(1.5)),
    ("recvmsg(10, -1)", lambda s: s.recvmsg(10, -1)),
    ("recvmsg(10, 1.5)", lambda s: s.recvmsg(10, 1.5)),
    ("recvmsg(10, 0, 'x')", lambda s: s.recvmsg(10, 0, "x")),
    ("recv_into(buf, -1)", lambda s: s.recv_into(bytearray(8), -1)),
    ("recv_into(buf, 9)", lambda s: s.recv_into(bytearray(8), 9)),
    ("recv_into(buf, 1.5)", lambda s: s.recv_into(bytearray(8), 1.5)),
    ("recv_into(bytes)", lambda s: s.recv_into(b"readonly")),
    ("recv_into('str')", lambda s: s.recv_into("str")),
    ("recv_into(buf, 0, 'x')", lambda s: s.recv_into(bytearray(8), 0, "x")),
    ("recvfrom_into(buf, -1)", lambda s: s.recvfrom_into(bytearray(8), -1)),
    ("recvfrom_into(buf, 9)", lambda s: s.recvfrom_into(bytearray(8), 9)),
    ("recvfrom_into(buf, 1.5)", lambda s: s.recvfrom_into(bytearray(8), 1.5)),
    ("recvfrom_into(bytes)", lambda s: s.recvfrom_into(b"readonly")),
]

# What the kernel answers where the stdlib passes the call on (errno; TypeError: stdlib).
BAD_KERNEL: list[tuple[str, Callable[[Any], object], int]] = [
    ("recv(0)", lambda s: s.recv(0), errno.EINVAL),
    ("recvfrom(0)", lambda s: s.recvfrom(0), errno.EINVAL),
    ("recvmsg(0)", lambda s: s.recvmsg(0, 64), errno.EINVAL),
    ("recv_into(empty)", lambda s: s.recv_into(bytearray(0)), errno.EINVAL),
    ("recvfrom_into(empty)", lambda s: s.recvfrom_into(bytearray(0)), errno.EINVAL),
]

IMP = tipcshm.TIPC_IMPORTANCE
BAD_SETSOCKOPT: list[tuple[str, Callable[[Any], object], type[Exception], int | None]] = [
    ("float", lambda s: s.setsockopt(SOL_TIPC, IMP, 1.5), TypeError, None),
    ("str", lambda s: s.setsockopt(SOL_TIPC, IMP, "2"), TypeError, None),
    ("None", lambda s: s.setsockopt(SOL_TIPC, IMP, None), TypeError, None),
    ("beyond C int", lambda s: s.setsockopt(SOL_TIPC, IMP, 2**40), TypeError, None),
    ("level str", lambda s: s.setsockopt("x", IMP, 1), TypeError, None),
    ("option float", lambda s: s.setsockopt(SOL_TIPC, 127.0, 1), TypeError, None),
    ("short bytes", lambda s: s.setsockopt(SOL_TIPC, IMP, b"\x02\x00"), OSError, errno.EINVAL),
    ("importance 4", lambda s: s.setsockopt(SOL_TIPC, IMP, 4), OSError, errno.EINVAL),
    ("importance -1", lambda s: s.setsockopt(SOL_TIPC, IMP, -1), OSError, errno.EINVAL),
    ("NULL value", lambda s: s.setsockopt(SOL_TIPC, IMP, None, 4), OSError, errno.EFAULT),
    ("unknown", lambda s: s.setsockopt(SOL_TIPC, 9999, 1), OSError, errno.EINVAL),
    (
        "mcast with a value",
        lambda s: s.setsockopt(SOL_TIPC, tipcshm.TIPC_MCAST_BROADCAST, 1),
        OSError,
        errno.EINVAL,
    ),
]


def stdlib_error(call: Callable[[Any], object]) -> BaseException:
    """What CPython's socket module raises for the same call (queued data on a pair)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.send(b"x")
        try:
            call(b)
        except Exception as e:  # noqa: BLE001 - the reference outcome, whatever it is
            return e
    raise AssertionError("the stdlib accepted the call")


def intact(tx: Any, rx: Any) -> None:
    """The queued message is still whole and first in line; queue it again."""
    assert rx.recv(1000) == MESSAGE
    tx.send(MESSAGE)


KINDS = [
    pytest.param(SOCK_RDM, id="rdm"),
    pytest.param(SOCK_SEQPACKET, id="seqpacket"),
    pytest.param(SOCK_STREAM, id="stream"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arguments_raise_before_anything_is_consumed(node: str, kind: int) -> None:
    with endpoints(node, kind) as (tx, rx):
        rx.settimeout(5)
        tx.send(MESSAGE)
        for name, call in BAD_RECV:
            want = stdlib_error(call)
            with pytest.raises(type(want)) as got:
                call(rx)
            assert type(got.value) is type(want), name
            assert str(got.value) == str(want), name
            intact(tx, rx)
        for name, call, code in BAD_KERNEL:
            with pytest.raises(OSError) as got:
                call(rx)
            assert got.value.errno == code, name
            intact(tx, rx)
        for name, call, exc, code in BAD_SETSOCKOPT:
            with pytest.raises(exc) as got:
                call(rx)
            if code is not None:
                assert got.value.errno == code, name
            assert rx.getsockopt(SOL_TIPC, IMP) == 0, name  # nothing half-applied
            intact(tx, rx)
        assert rx.recv(1000) == MESSAGE


@pytest.mark.parametrize("kind", KINDS[1:])
def test_bad_shutdown_arguments_leave_the_connection_alone(node: str, kind: int) -> None:
    with endpoints(node, kind) as (tx, rx):
        rx.settimeout(5)
        tx.send(MESSAGE)
        for how in (-1, 0, 1, 3):  # tipc_shutdown takes SHUT_RDWR only
            with pytest.raises(OSError) as got:
                rx.shutdown(how)
            assert got.value.errno == errno.EINVAL
        for how in ("x", 1.0, 2.0, None):
            with pytest.raises(TypeError):
                rx.shutdown(how)
        assert rx.recv(1000) == MESSAGE
        rx.send(b"still connected")
        tx.settimeout(5)
        assert tx.recv(1000) == b"still connected"


def test_setsockopt_forms_the_stdlib_accepts(node: str) -> None:
    with sock(node, SOCK_RDM) as s, sock(node, SOCK_STREAM) as st:
        s.setsockopt(SOL_TIPC, IMP, b"\x03\x00\x00\x00")
        assert s.getsockopt(SOL_TIPC, IMP) == 3
        s.setsockopt(SOL_TIPC, IMP, True)
        assert s.getsockopt(SOL_TIPC, IMP) == 1
        s.setsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT, -1)  # a u32 to the kernel, kept
        assert s.getsockopt(SOL_TIPC, tipcshm.TIPC_CONN_TIMEOUT) == 0xFFFF  # in a u16
        s.setsockopt(SOL_TIPC, tipcshm.TIPC_MCAST_REPLICAST, None, 0)
        with pytest.raises(OSError) as got:
            st.setsockopt(SOL_TIPC, tipcshm.TIPC_SRC_DROPPABLE, 1)
        assert got.value.errno == errno.ENOPROTOOPT
        st.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # ignored, as the kernel


# -- sends to receivers that go away --------------------------------------------------------


def test_cached_route_into_a_forgotten_lane(node: str) -> None:
    """Two sockets of one process share its lanes: when one finds a receiver gone and
    drops the lane, the other's cached route into it must not touch the unmapped ring."""
    with sock(node, SOCK_RDM) as a, sock(node, SOCK_RDM) as b:
        for _ in range(3):
            rx = sock(node, SOCK_RDM)
            addr = (TIPC_ADDR_ID, 0, rx.port, 0)
            assert a.sendto(b"cached", addr) == 6  # a caches a route into rx
            assert rx.recv(100) == b"cached"
            rx.close()
            assert b.sendto(b"finds it gone", addr) == 13  # dropped (dest-droppable)
            assert a.sendto(b"through the stale route", addr) == 23
            a.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
            b.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 0)
            assert a.sendto(b"rejected", addr) == 8
            a.settimeout(5)
            data, anc, _flags, _src = a.recvmsg(100, 256)
            assert data == b""
            errinfo = [d for lvl, t, d in anc if t == tipcshm.TIPC_ERRINFO]
            assert errinfo and int.from_bytes(errinfo[0][:4], "little") == 2  # NO_PORT
            a.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 1)
            b.setsockopt(SOL_TIPC, tipcshm.TIPC_DEST_DROPPABLE, 1)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sends_while_receivers_come_and_go(node: str) -> None:
    """Senders in two threads keep sending while receivers close and new ones open: every
    send succeeds (delivered, or dropped as undeliverable), none raises an internal error."""
    errors: list[BaseException] = []
    stop = threading.Event()
    current: list[tuple[int, int, int, int]] = []
    sent = [0, 0]

    def sender(i: int) -> None:
        with sock(node, SOCK_RDM) as s:
            s.settimeout(5)
            while not stop.is_set():
                for addr in list(current):
                    try:
                        s.sendto(b"x" * 64, addr)
                        sent[i] += 1
                    except OSError as e:
                        if not isinstance(e, TimeoutError):  # a receiver that stopped reading
                            errors.append(e)
                    except Exception as e:  # noqa: BLE001 - exactly what must never happen
                        errors.append(e)
                        stop.set()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    receivers = [sock(node, SOCK_RDM) for _ in range(3)]
    gone: list[tuple[int, int, int, int]] = []  # closed ones: sends there are rejected
    current[:] = [(TIPC_ADDR_ID, 0, r.port, 0) for r in receivers]
    for t in threads:
        t.start()
    turns = 0
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and not stop.is_set():
            old = receivers.pop(0)
            old.close()
            gone = [(TIPC_ADDR_ID, 0, old.port, 0)] + gone[:1]
            receivers.append(sock(node, SOCK_RDM))
            current[:] = [(TIPC_ADDR_ID, 0, r.port, 0) for r in receivers] + gone
            turns += 1
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for r in receivers:
            r.close()
    assert not errors, errors[:3]
    assert turns > 50 and sum(sent) > 1000

"""MSG_PEEK shows exactly what the next read takes (tipc_recvmsg / tipc_recvstream)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import Child

import tipcshm
from tipcshm import (
    AF_TIPC,
    SOCK_RDM,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    TIPC_ADDR_ID,
    TIPC_ADDR_NAME,
)
from tipcshm.constants import MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC, MSG_WAITALL

# One node for the module's tests (tests/conftest.py); those that need their own say so.
pytestmark = pytest.mark.shared_node

SERVICE = 7200

SENDER = """
s = tipcshm.socket(tipcshm.AF_TIPC, tipcshm.SOCK_RDM, node=NODE)
print(s.port, flush=True)
for line in sys.stdin:
    port, text = line.split()
    s.sendto(text.encode(), (tipcshm.TIPC_ADDR_ID, 0, int(port), 0))
    print("sent", flush=True)
"""


def sock(node: str, kind: int) -> Any:
    return tipcshm.socket(AF_TIPC, kind, node=node)


@contextmanager
def connected(node: str, kind: int) -> Iterator[tuple[Any, Any]]:
    with sock(node, kind) as srv, sock(node, kind) as tx:
        srv.bind((TIPC_ADDR_NAME, SERVICE, 1, 0))
        srv.listen(4)
        t = threading.Thread(target=tx.connect, args=((TIPC_ADDR_NAME, SERVICE, 1, 0),))
        t.start()
        rx, _ = srv.accept()
        t.join(10)
        with rx:
            rx.settimeout(5)
            yield tx, rx


@pytest.mark.timeout(60)
def test_rdm_peek_then_read_take_the_same_message(node: str) -> None:
    """Two senders, two lanes: a message arriving in another lane between the peek and
    the read must not overtake the one the peek showed (the round robin stays put)."""
    a, b = Child(node, SENDER), Child(node, SENDER)
    try:
        ports = {int(a.line()): "a", int(b.line()): "b"}
        with sock(node, SOCK_RDM) as rx:
            rx.settimeout(5)

            def send(child: Child, text: str) -> None:
                child.send(f"{rx.port} {text}")
                child.expect("sent")

            peeks = [
                lambda: rx.recv(100, MSG_PEEK),
                lambda: rx.recvfrom(100, MSG_PEEK),
                lambda: rx.recvmsg(100, 0, MSG_PEEK),
            ]
            reads = [
                lambda: rx.recv(100),
                lambda: rx.recvfrom(100),
                lambda: rx.recvmsg(100),
            ]
            for turn in range(12):
                first, second = (a, b) if turn % 2 else (b, a)
                send(first, f"first{turn}")
                peeked = peeks[turn % 3]()
                send(second, f"second{turn}")  # now queued in the other lane
                got = reads[turn % 3]()
                assert got == peeked, turn
                data = got if isinstance(got, bytes) else got[0]
                assert data == f"first{turn}".encode()
                if not isinstance(got, bytes):
                    assert ports[got[-1][2]] == ("a" if first is a else "b")
                assert rx.recv(100) == f"second{turn}".encode()
    finally:
        a.close()
        b.close()


def test_rdm_peek_shorter_than_the_message(node: str) -> None:
    with sock(node, SOCK_RDM) as tx, sock(node, SOCK_RDM) as rx:
        rx.settimeout(5)
        tx.sendto(b"hello world", (TIPC_ADDR_ID, 0, rx.port, 0))
        assert rx.recv(5, MSG_PEEK) == b"hello"
        data, _anc, flags, _addr = rx.recvmsg(5, 0, MSG_PEEK)
        assert (data, flags & MSG_TRUNC) == (b"hello", MSG_TRUNC)
        assert rx.recv(100) == b"hello world"
        with pytest.raises(BlockingIOError):
            rx.recv(100, MSG_PEEK | MSG_DONTWAIT)


@pytest.mark.timeout(15)
def test_stream_peek_returns_what_is_queued(node: str) -> None:
    """Fewer bytes queued than asked for: the peek returns them (it used to spin)."""
    with connected(node, SOCK_STREAM) as (tx, rx):
        tx.send(b"abc")
        assert rx.recv(100, MSG_PEEK) == b"abc"
        assert rx.recv(100, MSG_PEEK | MSG_WAITALL) == b"abc"  # the kernel ignores WAITALL
        assert rx.recv(100) == b"abc"
        with pytest.raises(BlockingIOError):
            rx.recv(100, MSG_PEEK | MSG_DONTWAIT)


@pytest.mark.timeout(15)
def test_stream_peek_stays_within_the_first_message(node: str) -> None:
    """tipc_recvstream stops a peek at the end of the first queued message, and starts it
    where an earlier read left that message."""
    with connected(node, SOCK_STREAM) as (tx, rx):
        tx.send(b"abc")
        tx.send(b"def")
        assert rx.recv(100, MSG_PEEK) == b"abc"
        assert rx.recv(100, MSG_PEEK | MSG_WAITALL) == b"abc"
        assert rx.recv(2) == b"ab"
        assert rx.recv(100, MSG_PEEK) == b"c"
        buf = bytearray(10)
        assert rx.recv_into(buf, 0, MSG_PEEK) == 1 and buf[:1] == b"c"
        data, _anc, _flags, _addr = rx.recvmsg(100, 0, MSG_PEEK)
        assert data == b"c"
        assert rx.recv(100, MSG_WAITALL | MSG_DONTWAIT) == b"cdef"


@pytest.mark.timeout(15)
def test_seqpacket_peek(node: str) -> None:
    with connected(node, SOCK_SEQPACKET) as (tx, rx):
        tx.send(b"hello")
        tx.send(b"world")
        assert rx.recv(3, MSG_PEEK) == b"hel"
        data, _anc, flags, addr = rx.recvmsg(3, 0, MSG_PEEK)
        assert (data, flags & MSG_TRUNC) == (b"hel", MSG_TRUNC)
        assert addr[2] == tx.port
        assert rx.recv(100, MSG_PEEK) == b"hello"  # one message, never two
        assert rx.recv(100) == b"hello"
        assert rx.recvfrom(100, MSG_PEEK) == (b"world", rx.getpeername())
        assert rx.recv(100) == b"world"
        with pytest.raises(BlockingIOError):
            rx.recv(100, MSG_PEEK | MSG_DONTWAIT)
